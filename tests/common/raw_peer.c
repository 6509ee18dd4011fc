#include "raw_peer.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "channel/frame.h"
#include "cmojo_wire.h"
#include "core/dispatcher.h"
#include "core/message.h"
#include "mp.h"
#include "node/node_wire.h"
#include "ports/event.h"

#define CHECK CMOJO_MP_CHECK

void cmojo_raw_frame_header(uint8_t *out, uint32_t total_size, uint16_t type, uint16_t num_fds)
{
    memset(out, 0, CHANNEL_FRAME_HEADER_SIZE);
    wire_store_u32(out, total_size);
    wire_store_u16(out + 4, CHANNEL_FRAME_HEADER_SIZE);
    wire_store_u16(out + 6, type);
    wire_store_u16(out + 8, num_fds);
}

void cmojo_raw_send(int s, const void *buf, size_t len, const int *fds, size_t num_fds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CMOJO_RAW_MAX_FDS)];
        struct cmsghdr align;
    } control;
    const uint8_t *p = buf;

    CHECK(num_fds <= CMOJO_RAW_MAX_FDS);
    while (len > 0) {
        struct iovec iov = {(void *)p, len};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        if (num_fds > 0) {
            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * num_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * num_fds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * num_fds);
        }
        ssize_t r = sendmsg(s, &mh, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r > 0);
        p += r;
        len -= (size_t)r;
        num_fds = 0;
    }
}

/* Reads exactly len bytes within the deadline; false on EOF, error or timeout. */
static bool read_exact(int s, void *buf, size_t len, int64_t deadline)
{
    uint8_t *p = buf;

    while (len > 0) {
        struct pollfd pfd = {s, POLLIN, 0};
        int64_t left = deadline - cmojo_mp_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t r = read(s, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

uint16_t cmojo_raw_read_frame(int s)
{
    static uint8_t body[64 * 1024];
    size_t len;

    return cmojo_raw_read_frame_payload(s, body, sizeof(body), &len);
}

uint16_t cmojo_raw_read_frame_payload(int s, uint8_t *payload, size_t cap, size_t *len)
{
    uint8_t hdr[CHANNEL_FRAME_HEADER_SIZE];
    int64_t deadline = cmojo_mp_now_ms() + CMOJO_RAW_TIMEOUT_MS;

    CHECK(read_exact(s, hdr, sizeof(hdr), deadline));
    uint32_t total = wire_load_u32(hdr);
    CHECK(total >= CHANNEL_FRAME_HEADER_SIZE &&
          wire_align8(total) - CHANNEL_FRAME_HEADER_SIZE <= cap);
    CHECK(wire_load_u16(hdr + 8) == 0); /* no fds: this reader would not see them */
    size_t rest = wire_align8(total) - CHANNEL_FRAME_HEADER_SIZE;
    CHECK(read_exact(s, payload, rest, deadline));
    *len = total - CHANNEL_FRAME_HEADER_SIZE;
    return wire_load_u16(hdr + 6);
}

bool cmojo_raw_wait_eof(int s)
{
    int64_t deadline = cmojo_mp_now_ms() + CMOJO_RAW_TIMEOUT_MS;
    char buf[4096];

    for (;;) {
        struct pollfd pfd = {s, POLLIN, 0};
        int64_t left = deadline - cmojo_mp_now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return false;
        ssize_t r = read(s, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
        if (r < 0)
            return false;
    }
}

void cmojo_raw_send_accept(int s, const ports_name *me)
{
    uint8_t frame[CHANNEL_FRAME_HEADER_SIZE + NODE_NAME_WIRE_SIZE];

    cmojo_raw_frame_header(frame, sizeof(frame), NODE_MSG_ACCEPT, 0);
    wire_store_u64(frame + CHANNEL_FRAME_HEADER_SIZE, me->v1);
    wire_store_u64(frame + CHANNEL_FRAME_HEADER_SIZE + 8, me->v2);
    cmojo_raw_send(s, frame, sizeof(frame), NULL, 0);
}

void cmojo_raw_send_foreign_port_event(int s, uint32_t type, const void *state, uint32_t state_size,
                                       const int *fds, size_t num_fds)
{
    static uint8_t frame[4096];
    const ports_name other = {0x1111111111111111ull, 0x2222222222222222ull};

    ports_event *ev = ports_user_message_new(1, NULL);
    CHECK(ev != NULL);
    ev->port_name = (ports_name){0x3333, 0x4444};
    ev->from_port = (ports_name){0x5555, 0x6666};
    ev->control_sequence_num = 1;
    ev->u.user.sequence_num = 1;
    ev->u.user.ports[0] = (ports_name){0x7777, 0x8888};
    ev->u.user.descriptors[0] = (ports_port_descriptor){
        .peer_node = {0x9999, 0xaaaa},
        .peer_port = {0xbbbb, 0xcccc},
        .referring_node = other,
        .referring_port = {0xdddd, 0xeeee},
        .next_sequence_num_to_send = 1,
        .next_sequence_num_to_receive = 1,
        .last_sequence_num_to_receive = PORTS_INVALID_SEQUENCE_NUM,
    };
    size_t ev_size = ports_event_serialized_size(ev);
    size_t env_size =
        CORE_ENVELOPE_HEADER_SIZE + 2 * CORE_ENVELOPE_HANDLE_SIZE + (size_t)wire_align8(state_size);
    size_t payload = ev_size + env_size;
    CHECK(CHANNEL_FRAME_HEADER_SIZE + payload + 8 <= sizeof(frame));
    memset(frame, 0, sizeof(frame));
    cmojo_raw_frame_header(frame, (uint32_t)(CHANNEL_FRAME_HEADER_SIZE + payload), NODE_MSG_EVENT,
                           (uint16_t)num_fds);
    ports_event_serialize(ev, frame + CHANNEL_FRAME_HEADER_SIZE);
    ports_event_destroy(ev);
    uint8_t *env = frame + CHANNEL_FRAME_HEADER_SIZE + ev_size;
    wire_store_u32(env, 0); /* num_bytes */
    wire_store_u32(env + 4, 2);
    wire_store_u32(env + 8, CORE_DISPATCHER_MESSAGE_PIPE);
    wire_store_u32(env + 12, 0);
    wire_store_u32(env + 16, type);
    wire_store_u32(env + 20, state_size);
    if (state_size)
        memcpy(env + 24, state, state_size);
    size_t wire = (size_t)wire_align8(CHANNEL_FRAME_HEADER_SIZE + payload);
    cmojo_raw_send(s, frame, wire, fds, num_fds);
}
