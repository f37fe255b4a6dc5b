/* Batched fan-out of one prepared RTP packet to many subscribers (sfu/native.py).
 *
 * One call per forwarded packet and group of subscribers: for each subscriber copy
 * the packet, SRTP-protect the copy with that subscriber's libsrtp session and send it
 * on that subscriber's UDP socket, without returning to Python in between. libsrtp is
 * the copy pylibsrtp bundles: its srtp_protect is handed over as a function pointer
 * (yv_init), so this file links against nothing but libc.
 *
 * Each subscriber has its own socket (one aiortc peer connection, one ICE socket), so a
 * packet's copies go out one send(2) each: sendmmsg(2) batches datagrams of one socket
 * only. A run of sinks sharing one socket (several slots of one peer in one batch) is
 * sent with one sendmmsg.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define YV_SLOT 1664 /* an MTU-sized packet plus libsrtp's largest trailer */
#define YV_RUN 64    /* datagrams per sendmmsg */

/* One subscriber: its libsrtp session (srtp_t), its socket (a dup the Python side
 * owns) and, unless the socket is connected (addrlen 0), the sockaddr to send to. */
struct yv_sink {
    void *srtp;
    int fd;
    int addrlen;
    uint8_t addr[28];
};

typedef int (*yv_protect_fn)(void *ctx, void *rtp, int *len);

static yv_protect_fn yv_protect = 0;

void yv_init(uintptr_t protect) { yv_protect = (yv_protect_fn)protect; }

/* Protect `size` bytes of `packet` for every sink and send; returns datagrams sent,
 * adds the sinks whose copy was not sent (protect failed, full socket buffer) to
 * *errors. `scratch` holds YV_RUN * YV_SLOT bytes. */
int yv_fanout(const char *packet, int size, const struct yv_sink *sinks, int count,
              uint8_t *scratch, int *errors) {
    struct mmsghdr msgs[YV_RUN];
    struct iovec iovs[YV_RUN];
    int sent = 0, failed = 0;
    if (yv_protect == 0 || size <= 0 || size > 1500) {
        *errors += count;
        return 0;
    }
    int i = 0;
    while (i < count) {
        /* A run of sinks on the same socket (and the same kind of address). */
        int fd = sinks[i].fd, n = 0;
        while (i < count && n < YV_RUN && sinks[i].fd == fd) {
            const struct yv_sink *sink = &sinks[i++];
            uint8_t *slot = scratch + (size_t)n * YV_SLOT;
            int length = size;
            memcpy(slot, packet, (size_t)size);
            if (yv_protect(sink->srtp, slot, &length) != 0) {
                failed++;
                continue;
            }
            iovs[n].iov_base = slot;
            iovs[n].iov_len = (size_t)length;
            memset(&msgs[n].msg_hdr, 0, sizeof(msgs[n].msg_hdr));
            msgs[n].msg_hdr.msg_iov = &iovs[n];
            msgs[n].msg_hdr.msg_iovlen = 1;
            if (sink->addrlen) {
                msgs[n].msg_hdr.msg_name = (void *)sink->addr;
                msgs[n].msg_hdr.msg_namelen = (socklen_t)sink->addrlen;
            }
            n++;
        }
        if (n == 1) {
            const struct msghdr *h = &msgs[0].msg_hdr;
            ssize_t r = h->msg_namelen
                ? sendto(fd, iovs[0].iov_base, iovs[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL,
                         (const struct sockaddr *)h->msg_name, h->msg_namelen)
                : send(fd, iovs[0].iov_base, iovs[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0)
                failed++;
            else
                sent++;
        } else if (n > 1) {
            int done = 0;
            while (done < n) {
                int r = sendmmsg(fd, msgs + done, (unsigned)(n - done), MSG_DONTWAIT | MSG_NOSIGNAL);
                if (r <= 0) { /* this datagram is lost for its subscriber; go on */
                    failed++;
                    done++;
                    continue;
                }
                sent += r;
                done += r;
            }
        }
    }
    *errors += failed;
    return sent;
}
