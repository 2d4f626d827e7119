/*
 * crc32c — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the item
 * header and of every spool record.  Table-driven slice-by-8 in software, with the SSE4.2
 * crc32 instruction used instead when the CPU has it (same result, checked by the tests).
 * Pure function: no I/O, no allocation; callable from any thread at any time (the tables
 * are built once, thread-safely, on first use).  It is not a cryptographic hash.
 */
#ifndef GEOGATE_WAN_CRC32C_H
#define GEOGATE_WAN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf[0..len), continuing from a previous result: pass crc = 0 to start, and
 * the value returned for one piece to continue with the next, so that
 * wan_crc32c(wan_crc32c(0, a, n), b, m) == wan_crc32c(0, ab, n + m).
 * wan_crc32c(0, "123456789", 9) == 0xE3069283 (the standard check value).
 * Cannot fail; buf may be NULL when len is 0. */
uint32_t wan_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same, always in software (slice-by-8).  For tests that compare the two paths. */
uint32_t wan_crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
