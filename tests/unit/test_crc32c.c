/*
 * test_crc32c — wan/crc32c.c against the standard check value and the RFC 3720 (iSCSI)
 * vectors, chaining at every split point, and the hardware path against the software one
 * on unaligned buffers.  Pure logic, single thread, no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wan/crc32c.h"

static void test_check_value(void **state)
{
    (void)state;
    assert_int_equal(wan_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(wan_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(wan_crc32c(0, NULL, 0), 0);
    assert_int_equal(wan_crc32c(0x12345678u, "", 0), 0x12345678u);
}

/* RFC 3720 appendix B.4 */
static void test_rfc3720_vectors(void **state)
{
    uint8_t buf[32];

    (void)state;
    memset(buf, 0, sizeof(buf));
    assert_int_equal(wan_crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof(buf));
    assert_int_equal(wan_crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)i;
    }
    assert_int_equal(wan_crc32c(0, buf, 32), 0x46DD794Eu);
    assert_int_equal(wan_crc32c_sw(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) {
        buf[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(wan_crc32c(0, buf, 32), 0x113FDB5Cu);
}

static void test_chaining(void **state)
{
    uint8_t buf[300];
    uint32_t whole;

    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 131 + 7);
    }
    whole = wan_crc32c(0, buf, sizeof(buf));
    for (size_t split = 0; split <= sizeof(buf); split++) {
        assert_int_equal(wan_crc32c(wan_crc32c(0, buf, split), buf + split, sizeof(buf) - split),
                         whole);
        assert_int_equal(
            wan_crc32c_sw(wan_crc32c_sw(0, buf, split), buf + split, sizeof(buf) - split), whole);
    }
}

static void test_hw_matches_sw(void **state)
{
    uint8_t *buf = malloc(4096 + 16);
    uint32_t seed = 12345;

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < 4096 + 16; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
    for (size_t off = 0; off < 16; off++) {
        for (size_t len = 0; len < 4096; len += 1 + len / 3) {
            assert_int_equal(wan_crc32c(0, buf + off, len), wan_crc32c_sw(0, buf + off, len));
        }
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_rfc3720_vectors),
        cmocka_unit_test(test_chaining),
        cmocka_unit_test(test_hw_matches_sw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
