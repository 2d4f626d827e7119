/*
 * grpc_frame — the gRPC length-prefixed message framing (PROTOCOL-HTTP2.md,
 * "Length-Prefixed-Message"): one flag byte (0 = uncompressed), a 4-byte big-endian
 * length, then the protobuf bytes.  An incremental decoder that takes the DATA of one
 * HTTP/2 stream in chunks cut anywhere, and the matching encoder.
 *
 * Pure logic: no I/O, no HTTP/2, no event loop; one deframer belongs to one stream and
 * one thread.  It does not decode protobuf and does not decompress: a compressed
 * message is an error (we announce grpc-accept-encoding: identity).
 *
 *   bytes ──feed──> [flag|len32] ──> payload (grown as it arrives, never past len)
 *                        │ len > max ──> -WAN_GRPC_FRAME_ETOOBIG (sticky)
 *                        │ flag 1    ──> -WAN_GRPC_FRAME_ECOMPRESSED (sticky)
 *                        v
 *                   WAN_GRPC_FRAME_MESSAGE: msg valid until the next feed
 */
#ifndef GEOGATE_WAN_GRPC_FRAME_H
#define GEOGATE_WAN_GRPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define WAN_GRPC_FRAME_PREFIX 5

/* What wan_grpc_deframer_feed() returns besides errors. */
enum wan_grpc_frame_rc {
    WAN_GRPC_FRAME_MORE = 0,    /* all input used, no message completed */
    WAN_GRPC_FRAME_MESSAGE = 1, /* a message completed; the rest of the input is untouched */
};

/* Errors, returned negated.  All but ENOMEM describe the peer's input. */
enum wan_grpc_frame_err {
    WAN_GRPC_FRAME_OK = 0,
    WAN_GRPC_FRAME_ETOOBIG,     /* the length prefix is over max_len */
    WAN_GRPC_FRAME_ECOMPRESSED, /* flag byte 1: compressed, which we never accept */
    WAN_GRPC_FRAME_EFLAG,       /* flag byte other than 0 and 1 */
    WAN_GRPC_FRAME_ETRUNCATED,  /* the stream ended inside a message */
    WAN_GRPC_FRAME_ENOMEM,      /* could not grow the message buffer */
    WAN_GRPC_FRAME_ERR_MAX
};

/* Short text for a return value of this module ("message too large", ...). */
const char *wan_grpc_frame_strerror(int rc);

/* One stream's decoder.  The fields are private; embed it and use the functions. */
struct wan_grpc_deframer {
    uint32_t max_len; /* largest payload accepted */
    uint32_t len;     /* declared length of the message being read */
    uint32_t have;    /* payload bytes of it read so far */
    uint8_t hdr[WAN_GRPC_FRAME_PREFIX];
    uint8_t hdr_have; /* prefix bytes read so far */
    uint8_t complete; /* the last feed returned a message: the next feed starts anew */
    int err;          /* sticky error, 0 or negative */
    uint8_t *buf;     /* payload; capacity grows with what arrived, never past len */
    size_t cap;
};

/* Set up d for messages of at most max_len bytes (0 = WAN_GRPC_MAX_MESSAGE_DEFAULT).
 * Allocates nothing. */
void wan_grpc_deframer_init(struct wan_grpc_deframer *d, uint32_t max_len);

/* Free the buffer; d may be set up again with wan_grpc_deframer_init(). */
void wan_grpc_deframer_free(struct wan_grpc_deframer *d);

/* Feed up to len bytes.  Stops right after the first message that completes, so the
 * caller can hand it on (or decide to stop reading) before feeding the rest.
 * *used: how many input bytes were taken.  On WAN_GRPC_FRAME_MESSAGE, *msg / *msg_len
 * point at the payload (a zero-length message gives a non-NULL msg), valid until the
 * next call.  Returns WAN_GRPC_FRAME_MORE, WAN_GRPC_FRAME_MESSAGE, or
 * -WAN_GRPC_FRAME_ETOOBIG / -ECOMPRESSED / -EFLAG (the peer's fault; *used bytes were
 * taken, the prefix included) or -WAN_GRPC_FRAME_ENOMEM.  Errors are sticky: every
 * later call returns the same error and takes nothing. */
int wan_grpc_deframer_feed(struct wan_grpc_deframer *d, const uint8_t *data, size_t len,
                           size_t *used, const uint8_t **msg, size_t *msg_len);

/* The stream ended: 0 if it ended between messages, -WAN_GRPC_FRAME_ETRUNCATED if
 * inside one, or the sticky error. */
int wan_grpc_deframer_finish(const struct wan_grpc_deframer *d);

/* Bytes taken by feed that belong to a message not yet complete (prefix included). */
size_t wan_grpc_deframer_pending(const struct wan_grpc_deframer *d);

/* Write the 5-byte prefix of an uncompressed message of len bytes. */
void wan_grpc_frame_prefix(uint8_t out[WAN_GRPC_FRAME_PREFIX], uint32_t len);

/* Bytes that wan_grpc_frame_write() will write for msg (prefix included). */
size_t wan_grpc_frame_size(const ProtobufCMessage *msg);

/* Pack msg with its prefix into out, which holds wan_grpc_frame_size(msg) bytes.
 * Returns the bytes written, or 0 if the packed message would not fit 32 bits. */
size_t wan_grpc_frame_write(const ProtobufCMessage *msg, uint8_t *out);

#endif
