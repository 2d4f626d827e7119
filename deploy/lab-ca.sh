#!/bin/sh
# lab-ca.sh — make a lab certificate authority and one certificate per site for the
# WAN links between geogate sites (TLS 1.3, mutual authentication).  Lab and test use
# only: the CA key sits unencrypted next to the certificates.  Needs only `openssl`.
#
# Usage:
#   deploy/lab-ca.sh [--days N] [--expired] [--other-ca OTHERDIR] DIR SITE...
#
#   DIR/ca.pem, DIR/ca.key        the lab CA (EC P-256), made once and then reused
#   DIR/SITE.pem, DIR/SITE.key    for each SITE: EC P-256 key; certificate with CN=SITE,
#                                 subjectAltName DNS:SITE, extendedKeyUsage
#                                 serverAuth,clientAuth (one certificate serves both
#                                 ends of a WAN link), valid for N days (default 825)
#
# Test fixtures:
#   --expired           also DIR/expired/SITE.pem + .key for each SITE: signed by the same
#                       CA, but notAfter is in the past (valid 2020-01-01 .. 2020-01-02)
#   --other-ca OTHERDIR also a second, unrelated CA in OTHERDIR (ca.pem, ca.key) and a
#                       certificate for each SITE signed by it (OTHERDIR/SITE.pem + .key)
#
# Idempotent: files that already exist and still check out (certificate verifies against
# its CA; an --expired one is expired) are kept, anything else is (re)made.  Quiet on
# success; on failure prints what openssl said and exits non-zero.  Site names are
# letters, digits, '.', '-' and '_'.
#
# Example: deploy/lab-ca.sh lab us-east eu-west ap-south
set -eu

days=825
expired=0
other_ca=""

usage() {
    echo "usage: $0 [--days N] [--expired] [--other-ca OTHERDIR] DIR SITE..." >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --days)
        [ $# -ge 2 ] || usage
        days=$2
        shift 2
        ;;
    --days=*)
        days=${1#--days=}
        shift
        ;;
    --expired)
        expired=1
        shift
        ;;
    --other-ca)
        [ $# -ge 2 ] || usage
        other_ca=$2
        shift 2
        ;;
    --other-ca=*)
        other_ca=${1#--other-ca=}
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    --)
        shift
        break
        ;;
    -*)
        echo "$0: unknown option $1" >&2
        usage
        ;;
    *)
        break
        ;;
    esac
done

[ $# -ge 1 ] || usage
dir=$1
shift

case "$days" in
'' | *[!0-9]*)
    echo "$0: --days wants a positive number of days, not '$days'" >&2
    exit 2
    ;;
esac
[ "$days" -gt 0 ] || {
    echo "$0: --days wants a positive number of days" >&2
    exit 2
}
for site in "$@"; do
    case "$site" in
    '' | *[!A-Za-z0-9._-]* | .*)
        echo "$0: bad site name '$site' (letters, digits, '.', '-', '_')" >&2
        exit 2
        ;;
    esac
done

command -v openssl >/dev/null 2>&1 || {
    echo "$0: the openssl command is not installed" >&2
    exit 1
}

# The CA outlives every certificate it signs.
ca_days=3650
[ "$days" -lt "$ca_days" ] || ca_days=$((days + 365))

work=$(mktemp -d "${TMPDIR:-/tmp}/lab-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
log=$work/log
: >"$log"

fail() {
    echo "$0: $*" >&2
    [ -s "$log" ] && sed 's/^/  /' "$log" >&2
    exit 1
}

# Everything openssl needs comes from this file, never from the system's openssl.cnf,
# so the certificates do not change with the distribution's defaults.  `openssl ca`
# (not `openssl x509 -req`) signs the site certificates because OpenSSL 3.0 (Debian 12)
# has no -not_before/-not_after for x509 and refuses -days 0 or less: only `ca` can
# write an arbitrary notBefore/notAfter, which the expired fixture needs.
cnf=$work/openssl.cnf
cat >"$cnf" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused

[ ca ]
default_ca = lab_ca
[ lab_ca ]
dir = $ENV::LAB_CA_DB
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
commonName = supplied

[ v3_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_site ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:$ENV::LAB_CA_SITE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
export LAB_CA_DB="$work/db" LAB_CA_SITE=unused

new_key() { # FILE
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1.tmp" 2>>"$log") ||
        fail "cannot make key $1"
    mv -f "$1.tmp" "$1"
}

# make_ca DIR CN: keep DIR/ca.pem + ca.key if they belong together, else make both.
make_ca() {
    cdir=$1
    mkdir -p "$cdir" 2>>"$log" || fail "cannot create $cdir"
    if [ -s "$cdir/ca.pem" ] && [ -s "$cdir/ca.key" ] &&
        openssl verify -CAfile "$cdir/ca.pem" "$cdir/ca.pem" >/dev/null 2>&1 &&
        key_matches "$cdir/ca.pem" "$cdir/ca.key"; then
        return 0
    fi
    new_key "$cdir/ca.key"
    # A random suffix keeps two labs' CAs apart even by name: a certificate from
    # another lab then fails as "unknown CA", never as a bad signature.
    openssl req -config "$cnf" -new -x509 -key "$cdir/ca.key" \
        -subj "/CN=$2 $(openssl rand -hex 4)" \
        -days "$ca_days" -sha256 -extensions v3_ca -set_serial "0x$(openssl rand -hex 8)" \
        -out "$cdir/ca.pem.tmp" 2>>"$log" || fail "cannot make CA $cdir/ca.pem"
    mv -f "$cdir/ca.pem.tmp" "$cdir/ca.pem"
    # Certificates signed by a CA that was just replaced are stale: drop them.
    stale_ca=1
}

key_matches() { # CERT KEY
    a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
    b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
    [ "$a" = "$b" ]
}

# site_ok CADIR CERT KEY KIND: does an existing certificate still fit?
site_ok() {
    [ "${stale_ca:-0}" -eq 0 ] && [ -s "$2" ] && [ -s "$3" ] || return 1
    key_matches "$2" "$3" || return 1
    if [ "$4" = expired ]; then
        openssl verify -no_check_time -CAfile "$1/ca.pem" "$2" >/dev/null 2>&1 &&
            ! openssl x509 -in "$2" -noout -checkend 0 >/dev/null 2>&1
    else
        openssl verify -CAfile "$1/ca.pem" "$2" >/dev/null 2>&1
    fi
}

# make_site CADIR OUTDIR SITE KIND (valid|expired)
make_site() {
    cadir=$1
    out=$2
    site=$3
    mkdir -p "$out" 2>>"$log" || fail "cannot create $out"
    site_ok "$cadir" "$out/$site.pem" "$out/$site.key" "$4" && return 0
    new_key "$out/$site.key"
    openssl req -config "$cnf" -new -key "$out/$site.key" -subj "/CN=$site" \
        -out "$work/$site.csr" 2>>"$log" || fail "cannot make request for $site"
    rm -rf "$LAB_CA_DB"
    mkdir -p "$LAB_CA_DB"
    : >"$LAB_CA_DB/index.txt"
    openssl rand -hex 16 >"$LAB_CA_DB/serial"
    if [ "$4" = expired ]; then
        validity="-startdate 200101000000Z -enddate 200102000000Z"
    else
        validity="-days $days"
    fi
    # shellcheck disable=SC2086 # $validity is two words on purpose
    LAB_CA_SITE=$site openssl ca -config "$cnf" -batch -notext -extensions v3_site \
        -cert "$cadir/ca.pem" -keyfile "$cadir/ca.key" $validity \
        -in "$work/$site.csr" -out "$out/$site.pem.tmp" >>"$log" 2>&1 ||
        fail "cannot sign certificate for $site"
    mv -f "$out/$site.pem.tmp" "$out/$site.pem"
}

stale_ca=0
make_ca "$dir" "geogate lab CA"
for site in "$@"; do
    make_site "$dir" "$dir" "$site" valid
done
if [ "$expired" -eq 1 ]; then
    for site in "$@"; do
        make_site "$dir" "$dir/expired" "$site" expired
    done
fi

if [ -n "$other_ca" ]; then
    stale_ca=0
    make_ca "$other_ca" "geogate other lab CA (not trusted)"
    for site in "$@"; do
        make_site "$other_ca" "$other_ca" "$site" valid
    done
fi
exit 0
