/* Message helpers for the core tests; see cmojo_test.h. */
#include <string.h>

#include "cmojo_test.h"
#include "mojo/public/c/system/message_pipe.h"

static const struct MojoAppendMessageDataOptions commit_size = {
    sizeof(struct MojoAppendMessageDataOptions), MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE};

MojoMessageHandle cmojo_test_new_message(void)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    assert_int_equal(MojoCreateMessage(NULL, &m), MOJO_RESULT_OK);
    assert_true(m != MOJO_MESSAGE_HANDLE_INVALID);
    return m;
}

MojoMessageHandle cmojo_test_new_data_message(const void *bytes, uint32_t num_bytes,
                                              const MojoHandle *handles, uint32_t num_handles)
{
    MojoMessageHandle m = cmojo_test_new_message();
    void *buf = NULL;
    uint32_t cap = 0;

    assert_int_equal(
        MojoAppendMessageData(m, num_bytes, handles, num_handles, &commit_size, &buf, &cap),
        MOJO_RESULT_OK);
    assert_true(cap >= num_bytes);
    if (num_bytes) {
        assert_non_null(buf);
        memcpy(buf, bytes, num_bytes);
    }
    return m;
}

void cmojo_test_write_text(MojoHandle pipe, const char *text, const MojoHandle *handles,
                           uint32_t num_handles)
{
    MojoMessageHandle m =
        cmojo_test_new_data_message(text, (uint32_t)strlen(text), handles, num_handles);
    assert_int_equal(MojoWriteMessage(pipe, m, NULL), MOJO_RESULT_OK);
}

void cmojo_test_expect_text(MojoHandle pipe, const char *text, MojoHandle *handles,
                            uint32_t num_handles)
{
    MojoMessageHandle m = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    uint32_t n = 0, nh = num_handles;

    assert_int_equal(MojoReadMessage(pipe, NULL, &m), MOJO_RESULT_OK);
    assert_int_equal(MojoGetMessageData(m, NULL, &buf, &n, handles, &nh), MOJO_RESULT_OK);
    assert_int_equal(nh, num_handles);
    assert_int_equal(n, strlen(text));
    if (n)
        assert_memory_equal(buf, text, n);
    assert_int_equal(MojoDestroyMessage(m), MOJO_RESULT_OK);
}

MojoResult cmojo_test_write_bytes(MojoHandle pipe, const void *data, uint32_t size)
{
    MojoMessageHandle msg = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    MojoResult r = MojoCreateMessage(NULL, &msg);

    if (r != MOJO_RESULT_OK)
        return r;
    r = MojoAppendMessageData(msg, size, NULL, 0, &commit_size, &buf, NULL);
    if (r != MOJO_RESULT_OK) {
        MojoDestroyMessage(msg);
        return r;
    }
    if (size > 0)
        memcpy(buf, data, size);
    return MojoWriteMessage(pipe, msg, NULL); /* consumes msg whatever the result */
}

MojoResult cmojo_test_write_u32(MojoHandle pipe, uint32_t value)
{
    return cmojo_test_write_bytes(pipe, &value, sizeof(value));
}

MojoResult cmojo_test_read_bytes(MojoHandle pipe, void *out, uint32_t capacity, uint32_t *size)
{
    MojoMessageHandle msg = MOJO_MESSAGE_HANDLE_INVALID;
    void *buf = NULL;
    uint32_t num_bytes = 0;
    uint32_t num_handles = 0;
    MojoResult r = MojoReadMessage(pipe, NULL, &msg);

    if (r != MOJO_RESULT_OK)
        return r;
    r = MojoGetMessageData(msg, NULL, &buf, &num_bytes, NULL, &num_handles);
    if (r == MOJO_RESULT_OK && num_bytes > capacity)
        r = MOJO_RESULT_RESOURCE_EXHAUSTED;
    if (r == MOJO_RESULT_OK) {
        if (num_bytes > 0)
            memcpy(out, buf, num_bytes);
        *size = num_bytes;
    }
    MojoDestroyMessage(msg);
    return r;
}

MojoResult cmojo_test_read_u32(MojoHandle pipe, uint32_t *value)
{
    uint32_t size = 0;
    MojoResult r = cmojo_test_read_bytes(pipe, value, sizeof(*value), &size);

    if (r == MOJO_RESULT_OK && size != sizeof(*value))
        return MOJO_RESULT_DATA_LOSS;
    return r;
}
