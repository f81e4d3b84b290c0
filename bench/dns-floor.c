/* The CPU floor of answering DNS over UDP on this machine: a "server" that does no DNS work.
 * It receives queries in batches (recvmmsg), turns each into a response by setting the QR bit
 * (an empty NOERROR answer), and sends the batch back (sendmmsg) -- the same system calls,
 * batch size and socket options torc-dns uses. bench/dns.sh measures it like the real servers:
 * whatever CPU it spends per answer is kernel cost (UDP receive and send, and on loopback the
 * delivery into the client's socket and the client's wakeup, which are charged to the sender)
 * that no DNS server can avoid.
 *
 * Usage: dns-floor PORT   (listens on 127.0.0.1:PORT until killed)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 32
#define MAX_PACKET 4096

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("dns-floor: bind");
        return 1;
    }
    static char bufs[BATCH][MAX_PACKET];
    static struct sockaddr_in peers[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = MAX_PACKET};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i], .msg_namelen = sizeof peers[i],
                                              .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        int out = 0;
        for (int i = 0; i < n; i++) {
            unsigned len = msgs[i].msg_len;
            if (len < 12)
                continue; /* not a DNS header: dropped, as a server would */
            bufs[i][2] |= (char)0x80; /* QR: this is the response */
            iov[i].iov_len = len;
            if (out != i) {
                msgs[out].msg_hdr = msgs[i].msg_hdr;
            }
            out++;
        }
        for (int sent = 0; sent < out;) {
            int r = sendmmsg(fd, msgs + sent, out - sent, 0);
            if (r <= 0)
                break;
            sent += r;
        }
    }
}
