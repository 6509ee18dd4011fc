/*
 * The public headers carry Mojo's values and layouts: code compiled against
 * Mojo's headers must mean the same thing against ours. The headers' static
 * asserts pin sizes; this pins numeric values and field offsets too.
 */
#include "cmojo_test.h"

#include <stddef.h>

#include "mojo/public/c/system/core.h"

static void test_result_codes_have_mojo_values(void **state)
{
    (void)state;
    const MojoResult codes[] = {
        MOJO_RESULT_OK,
        MOJO_RESULT_CANCELLED,
        MOJO_RESULT_UNKNOWN,
        MOJO_RESULT_INVALID_ARGUMENT,
        MOJO_RESULT_DEADLINE_EXCEEDED,
        MOJO_RESULT_NOT_FOUND,
        MOJO_RESULT_ALREADY_EXISTS,
        MOJO_RESULT_PERMISSION_DENIED,
        MOJO_RESULT_RESOURCE_EXHAUSTED,
        MOJO_RESULT_FAILED_PRECONDITION,
        MOJO_RESULT_ABORTED,
        MOJO_RESULT_OUT_OF_RANGE,
        MOJO_RESULT_UNIMPLEMENTED,
        MOJO_RESULT_INTERNAL,
        MOJO_RESULT_UNAVAILABLE,
        MOJO_RESULT_DATA_LOSS,
        MOJO_RESULT_BUSY,
        MOJO_RESULT_SHOULD_WAIT,
    };

    /* Mojo numbers its results 0..17 in exactly this order. */
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_int_equal(codes[i], i);
    assert_int_equal(sizeof(MojoResult), 4);
}

static void test_handle_signals_have_mojo_bits(void **state)
{
    (void)state;
    assert_int_equal(MOJO_HANDLE_SIGNAL_NONE, 0);
    assert_int_equal(MOJO_HANDLE_SIGNAL_READABLE, 1);
    assert_int_equal(MOJO_HANDLE_SIGNAL_WRITABLE, 2);
    assert_int_equal(MOJO_HANDLE_SIGNAL_PEER_CLOSED, 4);
    assert_int_equal(MOJO_HANDLE_SIGNAL_NEW_DATA_READABLE, 8);
    assert_int_equal(MOJO_HANDLE_SIGNAL_PEER_REMOTE, 16);
    assert_int_equal(MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED, 32);
    /* Usable in expressions: a stray ';' in a definition would not compile here. */
    MojoHandleSignals all = MOJO_HANDLE_SIGNAL_READABLE | MOJO_HANDLE_SIGNAL_QUOTA_EXCEEDED;
    assert_int_equal(all, 33);
}

static void test_scalar_types_and_sentinels(void **state)
{
    (void)state;
    assert_int_equal(sizeof(MojoHandle), sizeof(uintptr_t));
    assert_int_equal(MOJO_HANDLE_INVALID, 0);
    assert_int_equal(MOJO_MESSAGE_HANDLE_INVALID, 0);
    assert_int_equal(sizeof(MojoTimeTicks), 8);
    assert_true((MojoTimeTicks)-1 < 0); /* signed */
    assert_true(MOJO_DEADLINE_INDEFINITE == UINT64_MAX);
    assert_true(MOJO_QUOTA_LIMIT_NONE == UINT64_MAX);
}

static void test_flag_and_enum_values(void **state)
{
    (void)state;
    assert_int_equal(MOJO_INITIALIZE_FLAG_AS_BROKER, 1);
    assert_int_equal(MOJO_INITIALIZE_FLAG_FORCE_DIRECT_SHARED_MEMORY_ALLOCATION, 2);
    assert_int_equal(MOJO_INITIALIZE_FLAG_LOAD_ONLY, 4);
    assert_int_equal(MOJO_TRIGGER_CONDITION_SIGNALS_UNSATISFIED, 0);
    assert_int_equal(MOJO_TRIGGER_CONDITION_SIGNALS_SATISFIED, 1);
    assert_int_equal(MOJO_WATCH_CONDITION_SATISFIED, 1);
    assert_int_equal(MOJO_TRAP_EVENT_FLAG_WITHIN_API_CALL, 1);
    assert_int_equal(MOJO_QUOTA_TYPE_RECEIVE_QUEUE_LENGTH, 0);
    assert_int_equal(MOJO_QUOTA_TYPE_RECEIVE_QUEUE_MEMORY_SIZE, 1);
    assert_int_equal(MOJO_QUOTA_TYPE_UNREAD_MESSAGE_COUNT, 2);
    assert_int_equal(MOJO_READ_DATA_FLAG_ALL_OR_NONE, 1);
    assert_int_equal(MOJO_READ_DATA_FLAG_DISCARD, 2);
    assert_int_equal(MOJO_READ_DATA_FLAG_QUERY, 4);
    assert_int_equal(MOJO_READ_DATA_FLAG_PEEK, 8);
    assert_int_equal(MOJO_APPEND_MESSAGE_DATA_FLAG_COMMIT_SIZE, 1);
    assert_int_equal(MOJO_GET_MESSAGE_DATA_FLAG_IGNORE_HANDLES, 1);
    assert_int_equal(MOJO_DUPLICATE_BUFFER_HANDLE_FLAG_READ_ONLY, 1);
    assert_int_equal(MOJO_PLATFORM_HANDLE_TYPE_FILE_DESCRIPTOR, 1);
    assert_int_equal(MOJO_PLATFORM_HANDLE_TYPE_MACH_SEND_RIGHT, 2);
    assert_int_equal(MOJO_PLATFORM_HANDLE_TYPE_MACH_RECEIVE_RIGHT, 5);
    assert_int_equal(MOJO_PLATFORM_SHARED_MEMORY_REGION_ACCESS_MODE_UNSAFE, 2);
    assert_int_equal(MOJO_INVITATION_TRANSPORT_TYPE_CHANNEL_ASYNC, 2);
    assert_int_equal(MOJO_SEND_INVITATION_FLAG_UNTRUSTED_PROCESS, 2);
    assert_int_equal(MOJO_ACCEPT_INVITATION_FLAG_LEAK_TRANSPORT_ENDPOINT, 2);
    assert_int_equal(MOJO_PROCESS_ERROR_FLAG_DISCONNECTED, 1);
}

/* Field offsets of the structures with more than two members. */
static void test_struct_layouts(void **state)
{
    (void)state;
    assert_int_equal(offsetof(struct MojoInitializeOptions, mojo_core_path), 8);
    assert_int_equal(offsetof(struct MojoInitializeOptions, mojo_core_path_length), 16);
    assert_int_equal(offsetof(struct MojoInitializeOptions, argc), 20);
    assert_int_equal(offsetof(struct MojoInitializeOptions, argv), 24);
    assert_int_equal(offsetof(struct MojoTrapEvent, trigger_context), 8);
    assert_int_equal(offsetof(struct MojoTrapEvent, result), 16);
    assert_int_equal(offsetof(struct MojoTrapEvent, signals_state), 20);
    assert_int_equal(offsetof(struct MojoCreateDataPipeOptions, element_num_bytes), 8);
    assert_int_equal(offsetof(struct MojoCreateDataPipeOptions, capacity_num_bytes), 12);
    assert_int_equal(offsetof(struct MojoSharedBufferInfo, size), 8);
    assert_int_equal(offsetof(struct MojoPlatformHandle, value), 8);
    assert_int_equal(offsetof(struct MojoProcessErrorDetails, error_message), 8);
    assert_int_equal(offsetof(struct MojoProcessErrorDetails, flags), 16);
    assert_int_equal(offsetof(struct MojoInvitationTransportEndpoint, platform_handles), 16);
    assert_int_equal(offsetof(struct MojoSendInvitationOptions, isolated_connection_name_length),
                     16);
    assert_int_equal(sizeof(struct MojoHandleSignalsState), 8);
    assert_int_equal(MOJO_ALIGNOF(struct MojoHandleSignalsState), 4);
    assert_int_equal(MOJO_ALIGNOF(struct MojoCreateMessagePipeOptions), 8);
    assert_int_equal(MOJO_ALIGNOF(struct MojoTrapEvent), 8);
    /* Mojo leaves these two at natural (4-byte) alignment. */
    assert_int_equal(MOJO_ALIGNOF(struct MojoDuplicateBufferHandleOptions), 4);
    assert_int_equal(MOJO_ALIGNOF(struct MojoMapBufferOptions), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_codes_have_mojo_values),
        cmocka_unit_test(test_handle_signals_have_mojo_bits),
        cmocka_unit_test(test_scalar_types_and_sentinels),
        cmocka_unit_test(test_flag_and_enum_values),
        cmocka_unit_test(test_struct_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
