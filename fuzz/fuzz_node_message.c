/*
 * Fuzzes what the node layer parses from another process: node messages
 * (node_wire_parse), and the body of an EVENT frame -- a ports event whose
 * user-message payload is a message envelope (core_message_wire_parse).
 *
 * Input: byte 0 picks the frame type (bits 0-3, mod 11), byte 1 the number
 * of fds that "arrived" with it (bits 0-2) and what they are: /dev/null
 * duplicates, or with bit 3 set memfds sealed against shrinking and growing
 * of (byte 1 >> 4) x 4 KB, which data pipe ends accept as their ring, fd i
 * (i < 4) reopened read-only, as a consumer's ring must be, when bit 4 + i
 * of byte 0 is set; the rest is the frame's payload. The fds are real, so a
 * parser that keeps them must hand them to a dispatcher and one that rejects
 * must close them: the fd count is checked after every input.
 *
 * Every accepted node message must rebuild to the same bytes through the
 * builders; every accepted envelope must serialise back to the same bytes.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/message.h"
#include "node/node_wire.h"
#include "platform/block.h"
#include "ports/event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int open_fd_count(void)
{
    /* Open descriptors among the first 256 (every one the fuzzer and we use is low). */
    int count = 0;
    for (int fd = 0; fd < 256; fd++)
        count += fcntl(fd, F_GETFD) >= 0;
    return count;
}

/*
 * A memfd of size bytes that can neither shrink nor grow (a data pipe ring),
 * opened read-only if asked (a consumer's ring), or -1.
 */
static int sealed_memfd(off_t size, bool read_only)
{
    int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0 &&
        (ftruncate(fd, size) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0 && read_only) {
        char path[32];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        close(fd);
        fd = ro;
    }
    return fd;
}

static void check_node_message(uint16_t type, const uint8_t *buf, size_t len, size_t nfds)
{
    node_wire_msg m;
    const char *why = NULL;
    if (node_wire_parse(type, buf, len, nfds, &m, &why) != 0) {
        if (!why)
            abort(); /* a rejection always says why */
        return;
    }
    uint8_t *out = malloc(len + 64);
    if (!out)
        abort();
    size_t n = 0;
    switch (type) {
    case NODE_MSG_INVITE: {
        node_wire_name names[64];
        size_t pos = 0;
        uint32_t count = 0;
        while (count < 64 && node_wire_next_name(&m, &pos, &names[count]))
            count++;
        if (count != m.num_attachments)
            abort();
        if (node_wire_invite_size(names, count) != len)
            abort();
        n = node_wire_write_invite(out, &m.name, &m.broker, m.flags, names, count);
        break;
    }
    case NODE_MSG_ACCEPT:
    case NODE_MSG_REQUEST_INTRO:
    case NODE_MSG_NODE_LOST:
    case NODE_MSG_PEER_CUT:
        n = node_wire_write_name(out, &m.name);
        break;
    case NODE_MSG_MERGE_PORT:
        n = node_wire_write_merge_port(out, &m.name, m.text.bytes, m.text.len);
        break;
    case NODE_MSG_INTRODUCE:
        n = node_wire_write_introduce(out, &m.name, m.ok);
        break;
    case NODE_MSG_BAD_MESSAGE:
        n = node_wire_write_bad_message(out, &m.name, (const char *)m.text.bytes, m.text.len);
        break;
    default:
        abort(); /* parsed a type it should not know */
    }
    if (n != len || memcmp(out, buf, len) != 0)
        abort();
    free(out);
}

static void check_event(const uint8_t *buf, size_t len, int *fds, size_t nfds)
{
    ports_event *ev;
    if (ports_event_parse(buf, len, &ev) != PORTS_OK) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    if (ev->type != PORTS_EVENT_USER_MESSAGE || !ev->u.user.payload) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        ports_event_destroy(ev);
        return;
    }
    ports_payload *bytes = ev->u.user.payload;
    const uint8_t *env = ports_payload_bytes_data(bytes);
    size_t env_len = bytes->size;
    ports_payload *payload;
    const char *why = NULL;
    ports_name from = {1, 2};
    /*
     * The envelope is offered in a heap block of its own, as a channel offers
     * a large frame's buffer, so the message may keep it (and ASan watches
     * that it is freed once, with the message). A block not kept is ours.
     */
    void *block = plat_block_alloc(env_len ? env_len : 1);
    if (!block)
        abort();
    memcpy(block, env, env_len);
    int rv = core_message_wire_parse(&from, block, env_len, ev->u.user.num_ports, fds, nfds, &block,
                                     &payload, &why);
    if (rv != 0) {
        if (!why || !block)
            abort(); /* a failed parse keeps nothing */
        plat_block_free(block);
        ports_event_destroy(ev);
        return;
    }
    plat_block_free(block); /* NULL if the message kept it */
    size_t out_len, out_fds;
    if (core_message_wire_measure(payload, &out_len, &out_fds) != 0 || out_len != env_len ||
        out_fds != nfds)
        abort();
    uint8_t *out = malloc(out_len);
    int back[8];
    if (!out)
        abort();
    core_message_wire_serialize(payload, out, back);
    if (memcmp(out, env, env_len) != 0)
        abort();
    for (size_t i = 0; i < out_fds; i++)
        close(back[i]);
    free(out);
    payload->ops->destroy(payload);
    ports_event_destroy(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    /* Counted per input: libFuzzer itself opens and closes files between inputs. */
    int baseline = open_fd_count();
    uint16_t type = (uint16_t)((data[0] & 15) % 11);
    size_t nfds = data[1] % 8;
    int fds[8];
    for (size_t i = 0; i < nfds; i++)
        if ((fds[i] = data[1] & 8 ? sealed_memfd((off_t)(data[1] >> 4) * 4096,
                                                 i < 4 && (data[0] >> (4 + i)) & 1)
                                  : open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
            abort();
    const uint8_t *buf = data + 2;
    size_t len = size - 2;
    if (type == NODE_MSG_EVENT) {
        check_event(buf, len, fds, nfds);
    } else {
        check_node_message(type, buf, len, nfds);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]); /* the node closes what a node message brings */
    }
    if (open_fd_count() != baseline)
        abort(); /* a parser kept or lost track of an fd */
    return 0;
}
