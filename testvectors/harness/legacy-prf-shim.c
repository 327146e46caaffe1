/*
 * LD_PRELOAD library for the erebus interop harness, profile "tls-legacy-prf": makes an
 * OpenVPN 2.6 server behave like a 2.5 one, which does not know TLS_KEY_EXPORT (bit 3 of
 * IV_PROTO) and therefore derives the data-channel keys with the OpenVPN TLS PRF.
 *
 * It clears bit 3 of `IV_PROTO=<n>` in the TLS plaintext the server reads (the client's
 * key-method-2 message carries its peer info). The server then never sees the bit: it pushes
 * no `tls-ekm` in protocol-flags and both sides use the PRF. Nothing else is touched.
 *
 * OpenVPN 2.6 with OpenSSL 3 reads TLS plaintext with BIO_read() on an SSL filter BIO
 * (BIO_f_ssl); it calls neither SSL_read() nor SSL_read_ex() (the SSL BIO reaches the record
 * layer inside libssl, where no preloaded symbol can interpose). So BIO_read() is hooked, and
 * only reads from SSL BIOs are inspected; ciphertext read from the memory BIOs passes as is.
 *
 * Built at test time without OpenSSL headers:
 *     cc -shared -fPIC -O2 -o legacy-prf-shim.so legacy-prf-shim.c -ldl
 * Environment: EREBUS_PRF_SHIM_LOG=<file> receives one line per event (appended):
 *     legacy-prf-shim: loaded into openvpn (pid N), BIO_read hooked
 *     legacy-prf-shim: rewrote IV_PROTO=990 to IV_PROTO=982 (TLS_KEY_EXPORT hidden)
 *     legacy-prf-shim: IV_PROTO=134 has no TLS_KEY_EXPORT, left as is
 *     legacy-prf-shim: IV_PROTO value cut off at the end of a read, left as is
 * The library is loaded into every program of the server's command line (ip, setpriv,
 * openvpn); it logs and hooks only in openvpn.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OpenSSL's bio.h: BIO_TYPE_SSL is (7 | BIO_TYPE_FILTER), BIO_TYPE_FILTER is 0x0200. This
 * value is part of OpenSSL's stable API. */
#define SHIM_BIO_TYPE_SSL 0x0207
/* OpenVPN's ssl.h: IV_PROTO_TLS_KEY_EXPORT. */
#define SHIM_TLS_KEY_EXPORT 8UL

typedef int (*bio_read_fn)(void *bio, void *data, int len);
typedef int (*bio_method_type_fn)(const void *bio);

static bio_read_fn real_bio_read;
static bio_method_type_fn real_bio_method_type;

static void shim_log(const char *format, ...)
{
    const char *path = getenv("EREBUS_PRF_SHIM_LOG");
    if (path == NULL || path[0] == '\0')
        return;
    char line[256];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (length < 0)
        return;
    if ((size_t)length > sizeof line - 2)
        length = (int)(sizeof line - 2);
    line[length] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    /* One write per line on an O_APPEND file: lines never interleave. */
    ssize_t written = write(fd, line, (size_t)length + 1);
    (void)written;
    close(fd);
}

/* Whether this process is openvpn (the shim is also loaded into ip and setpriv). */
static int in_openvpn(void)
{
    char name[32] = {0};
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, name, sizeof name - 1);
    close(fd);
    return got > 0 && strncmp(name, "openvpn\n", 8) == 0;
}

static void resolve(void)
{
    if (real_bio_read == NULL)
        real_bio_read = (bio_read_fn)dlsym(RTLD_NEXT, "BIO_read");
    if (real_bio_method_type == NULL)
        real_bio_method_type = (bio_method_type_fn)dlsym(RTLD_NEXT, "BIO_method_type");
}

__attribute__((constructor)) static void shim_loaded(void)
{
    if (!in_openvpn())
        return;
    resolve();
    if (real_bio_read != NULL && real_bio_method_type != NULL)
        shim_log("legacy-prf-shim: loaded into openvpn (pid %ld), BIO_read hooked",
                 (long)getpid());
    else
        shim_log("legacy-prf-shim: loaded into openvpn (pid %ld) but BIO_read or "
                 "BIO_method_type is missing: nothing is rewritten",
                 (long)getpid());
}

/* Clears TLS_KEY_EXPORT in every `IV_PROTO=<digits>` that starts a line of `data`. The value
 * keeps its width (zero-padded, which OpenVPN's atoi() reads the same), so the lengths in the
 * key-method-2 message stay right. */
static void hide_key_export(char *data, size_t length)
{
    static const char key[] = "IV_PROTO=";
    const size_t key_length = sizeof key - 1;
    for (size_t at = 0; at + key_length <= length; at++) {
        if ((at > 0 && data[at - 1] != '\n') || memcmp(data + at, key, key_length) != 0)
            continue;
        size_t start = at + key_length;
        size_t end = start;
        unsigned long value = 0;
        while (end < length && end - start < 10 && data[end] >= '0' && data[end] <= '9') {
            value = value * 10 + (unsigned long)(data[end] - '0');
            end++;
        }
        if (end == length) {
            shim_log("legacy-prf-shim: IV_PROTO value cut off at the end of a read, left as is");
            return;
        }
        if (end == start)
            continue;
        if ((value & SHIM_TLS_KEY_EXPORT) == 0) {
            shim_log("legacy-prf-shim: IV_PROTO=%lu has no TLS_KEY_EXPORT, left as is", value);
            continue;
        }
        unsigned long hidden = value & ~SHIM_TLS_KEY_EXPORT;
        int width = (int)(end - start);
        char digits[16];
        int printed = snprintf(digits, sizeof digits, "%0*lu", width, hidden);
        /* hidden < value, so it never needs more digits than value had. */
        if (printed != width)
            continue;
        memcpy(data + start, digits, (size_t)width);
        shim_log("legacy-prf-shim: rewrote IV_PROTO=%lu to IV_PROTO=%lu (TLS_KEY_EXPORT hidden)",
                 value, hidden);
        at = end;
    }
}

int BIO_read(void *bio, void *data, int len)
{
    resolve();
    if (real_bio_read == NULL)
        return -1;
    int got = real_bio_read(bio, data, len);
    if (got > 0 && real_bio_method_type != NULL &&
        real_bio_method_type(bio) == SHIM_BIO_TYPE_SSL)
        hide_key_export((char *)data, (size_t)got);
    return got;
}
