#ifndef SNAPMOUNT_CCRYPTO_SHIM_H
#define SNAPMOUNT_CCRYPTO_SHIM_H

// One-shot SHA-256 and HMAC-SHA256 through libcrypto's EVP interfaces, which are
// the ones OpenSSL 3 does not deprecate.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <stddef.h>
#include <stdint.h>

#define CCRYPTO_SHA256_LENGTH 32

/// Returns 1 on success, 0 on failure.
static inline int ccrypto_sha256(const void *_Nullable data, size_t length,
                                 uint8_t *_Nonnull digest /* 32 bytes */) {
    unsigned int written = 0;
    static const uint8_t empty = 0;
    return EVP_Digest(data ? data : &empty, length, digest, &written, EVP_sha256(), NULL) == 1
        && written == CCRYPTO_SHA256_LENGTH;
}

/// Returns 1 on success, 0 on failure.
static inline int ccrypto_hmac_sha256(const void *_Nullable key, size_t keyLength,
                                      const void *_Nullable data, size_t length,
                                      uint8_t *_Nonnull mac /* 32 bytes */) {
    static const uint8_t empty = 0;
    size_t written = 0;
    unsigned char *result = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL,
                                      key ? key : &empty, keyLength,
                                      data ? data : &empty, length,
                                      mac, CCRYPTO_SHA256_LENGTH, &written);
    return result != NULL && written == CCRYPTO_SHA256_LENGTH;
}

/// Constant-time comparison: 0 when equal.
static inline int ccrypto_memcmp(const void *_Nonnull a, const void *_Nonnull b, size_t length) {
    return CRYPTO_memcmp(a, b, length);
}

static inline const char *_Nonnull ccrypto_version(void) {
    return OpenSSL_version(OPENSSL_VERSION);
}

#endif
