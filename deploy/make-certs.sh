#!/bin/sh
# Generate trial certificates for one example deployment, so that it passes
# `umproxy check-config` and runs from a fresh clone:
#
#   deploy/make-certs.sh deploy/edge sip.example.test
#   umproxy check-config deploy/edge/umproxy.toml
#
# Writes DIR/certs/: a private CA (ca.pem, ca.key), this proxy's certificate
# for NAME (and 127.0.0.1) signed by it (umproxy.pem, umproxy.key), and a
# second CA standing in for a hosting provider's (provider-ca.pem).
# For trials only: in production umproxy.pem/.key come from your CA, ca.pem
# is the CA of your UM servers and clients, provider-ca.pem the provider's.
# Existing files are kept unless FORCE=1.
set -eu

usage() { echo "usage: $0 DIR [NAME]   (NAME defaults to sip.example.test)" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1
name=${2:-sip.example.test}
days=${DAYS:-365}
command -v openssl >/dev/null || { echo "$0: openssl is needed" >&2; exit 1; }
[ -d "$dir" ] || { echo "$0: $dir is not a directory" >&2; exit 1; }
certs="$dir/certs"
if [ -e "$certs/umproxy.pem" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "$certs/umproxy.pem exists; keeping it (FORCE=1 to replace)"
    exit 0
fi
mkdir -p "$certs"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ca() { # ca NAME FILE-PREFIX
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -days "$days" -subj "/CN=$1" -keyout "$2.key" -out "$2.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

ca "umproxy trial CA" "$certs/ca"
ca "hosting provider trial CA" "$tmp/provider-ca"
cp "$tmp/provider-ca.pem" "$certs/provider-ca.pem"

openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=$name" -keyout "$certs/umproxy.key" -out "$tmp/umproxy.csr" 2>/dev/null
cat >"$tmp/ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name,IP:127.0.0.1
EXT
openssl x509 -req -in "$tmp/umproxy.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial \
    -CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/ext" -out "$certs/umproxy.pem" 2>/dev/null
chmod 0644 "$certs/ca.pem" "$certs/provider-ca.pem" "$certs/umproxy.pem"
echo "wrote $certs: umproxy.pem, umproxy.key ($name), ca.pem, ca.key, provider-ca.pem"
