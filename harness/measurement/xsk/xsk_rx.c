// AF_XDP receiver of the xsk-zero-copy claim: one socket on IFNAME's queue QUEUE,
// bound in zero-copy or copy mode (the bind fails if the driver cannot do the mode
// asked for), xsk_redirect.o attached in driver mode to feed it.
//
//   xsk_rx IFNAME QUEUE zerocopy|copy XSK_REDIRECT_OBJ
//
// It reads its rx ring from the bind until it is told to stop, with no timeout of
// its own: how long the caller takes to bring links up, arm probes and start the
// traffic is the caller's business. Every umem frame is on the fill ring before the
// bind (a zero-copy driver fills its rx ring from it as the socket is enabled), and
// frames read go back to the fill ring, kicking the driver when it asks for a
// wakeup (XDP_USE_NEED_WAKEUP). stdout, one JSON object a line:
//
//   {"ready": true, ...}            bound; reading
//   {"bound": false, "error": ...}  the set-up failed (exit 3)
//   {"snapshot": K, ...}            answer to the K-th SIGUSR1, once the rx ring is
//                                   drained: frames read, and what the kernel says
//                                   it put on the rx ring (its producer index),
//                                   entries left unread, XDP_STATISTICS
//
// SIGINT or SIGTERM takes socket and program down (detaching XDP resets the driver's
// rings, which the caller's probes must not see: the caller signals once they are read).
#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#define NUM_FRAMES 4096
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define BATCH 64
// A drain ends when the rx ring is empty and the kernel's producer index has not
// moved for QUIET_MS (the kernel publishes it at the end of each NAPI poll, before
// the driver counts the frames, so the caller asks only once the driver counted
// them), or after DRAIN_MAX_MS with "drained": false.
#define QUIET_MS 200
#define DRAIN_MAX_MS 10000

struct receiver {
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp, rx;
	struct xsk_socket *xsk;
	int fd;
	unsigned long long read, bytes, wakeups, bad;
	__u64 pending[NUM_FRAMES];  // frames read, not yet back on the fill ring
	unsigned int npending;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(const char *mode, const char *what, int err)
{
	printf("{\"bound\": false, \"mode\": \"%s\", \"error\": \"%s: %s\"}\n", mode, what, strerror(err));
	return 3;
}

static __u32 load(const __u32 *index)
{
	return __atomic_load_n(index, __ATOMIC_ACQUIRE);
}

// Frames read go back to the fill ring as far as it has room (never spinning: the
// kernel publishes what it took from the fill ring at the end of a poll).
static void recycle(struct receiver *r)
{
	unsigned int n = xsk_prod_nb_free(&r->fill, r->npending), idx, i;

	if (n > r->npending)
		n = r->npending;
	if (!n || xsk_ring_prod__reserve(&r->fill, n, &idx) != n)
		return;
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&r->fill, idx++) = r->pending[--r->npending];
	xsk_ring_prod__submit(&r->fill, n);
	if (xsk_ring_prod__needs_wakeup(&r->fill)) {
		// A zero-copy driver that ran out of fill buffers waits for this kick.
		recvfrom(r->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		r->wakeups++;
	}
}

static unsigned int read_rx(struct receiver *r)
{
	unsigned int got, total = 0, idx, i;

	while ((got = xsk_ring_cons__peek(&r->rx, BATCH, &idx))) {
		for (i = 0; i < got; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&r->rx, idx++);
			__u64 addr = xsk_umem__extract_addr(d->addr);

			// A descriptor outside the umem, or more than the frames there are, is the
			// kernel's fault: counted, never recycled (nor written past pending[]).
			if (addr >= (__u64)NUM_FRAMES * FRAME_SIZE || r->npending == NUM_FRAMES) {
				r->bad++;
				continue;
			}
			r->bytes += d->len;
			r->pending[r->npending++] = addr;
		}
		xsk_ring_cons__release(&r->rx, got);
		r->read += got;
		total += got;
	}
	recycle(r);
	return total;
}

static void wait_rx(struct receiver *r, int ms)
{
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	poll(&pfd, 1, ms);
}

static void report(struct receiver *r, unsigned int k, const char *mode, int zerocopy)
{
	struct xdp_statistics st = { 0 };
	socklen_t len = sizeof(st);
	double started = now(), changed = started;
	__u32 produced = load(r->rx.producer);
	int drained = 1;

	for (;;) {
		read_rx(r);
		if (load(r->rx.producer) != produced) {
			produced = load(r->rx.producer);
			changed = now();
		} else if (load(r->rx.producer) == load(r->rx.consumer) && (now() - changed) * 1000 >= QUIET_MS) {
			break;
		}
		if ((now() - started) * 1000 >= DRAIN_MAX_MS) {
			drained = 0;
			break;
		}
		wait_rx(r, 10);
	}
	if (getsockopt(r->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		memset(&st, 0, sizeof(st));
	printf("{\"snapshot\": %u, \"mode\": \"%s\", \"zerocopy\": %s, \"read\": %llu, \"bytes\": %llu, "
	       "\"delivered\": %u, \"unread\": %u, \"fill_queued\": %u, \"pending\": %u, \"wakeups\": %llu, "
	       "\"bad_descs\": %llu, "
	       "\"drained\": %s, \"drain_ms\": %.0f, \"stats\": {\"rx_dropped\": %llu, \"rx_ring_full\": %llu, "
	       "\"rx_fill_ring_empty_descs\": %llu, \"rx_invalid_descs\": %llu}}\n",
	       k, mode, zerocopy ? "true" : "false", r->read, r->bytes, load(r->rx.producer),
	       load(r->rx.producer) - load(r->rx.consumer), load(r->fill.producer) - load(r->fill.consumer),
	       r->npending, r->wakeups, r->bad, drained ? "true" : "false", (now() - started) * 1000,
	       (unsigned long long)st.rx_dropped, (unsigned long long)st.rx_ring_full,
	       (unsigned long long)st.rx_fill_ring_empty_descs, (unsigned long long)st.rx_invalid_descs);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct xsk_socket_config cfg = {
		.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS,
		.tx_size = 0,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = XDP_FLAGS_DRV_MODE,
	};
	struct xsk_umem_config ucfg = {
		.fill_size = NUM_FRAMES,  // room for every frame: recycling never waits for the kernel
		.comp_size = XSK_RING_CONS__DEFAULT_NUM_DESCS,
		.frame_size = FRAME_SIZE,
		.frame_headroom = XSK_UMEM__DEFAULT_FRAME_HEADROOM,
	};
	static struct receiver r;
	struct xsk_umem *umem;
	struct bpf_object *obj;
	struct xdp_options opts = { 0 };
	socklen_t optlen = sizeof(opts);
	unsigned int ifindex, queue, idx, i, snapshots = 0;
	const char *mode;
	void *bufs;
	int prog_fd, map_fd, sfd, err;
	sigset_t sigs;

	// A shell without job control starts background commands with SIGINT ignored:
	// default actions back, then blocked and taken through a signalfd in the loop.
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	if (argc != 5 || (strcmp(argv[3], "zerocopy") && strcmp(argv[3], "copy"))) {
		fprintf(stderr, "usage: %s IFNAME QUEUE zerocopy|copy XSK_REDIRECT_OBJ\n", argv[0]);
		return 2;
	}
	mode = argv[3];
	ifindex = if_nametoindex(argv[1]);
	queue = atoi(argv[2]);
	if (!ifindex)
		return fail(mode, argv[1], errno);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0)
		return fail(mode, "signalfd", errno);
	cfg.bind_flags = XDP_USE_NEED_WAKEUP | (strcmp(mode, "zerocopy") ? XDP_COPY : XDP_ZEROCOPY);

	obj = bpf_object__open_file(argv[4], NULL);
	if (!obj || bpf_object__load(obj))
		return fail(mode, "loading xsk_redirect.o", errno);
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "xsk_redirect"));
	map_fd = bpf_object__find_map_fd_by_name(obj, "xsks");
	err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE, NULL);
	if (err)
		return fail(mode, "attaching xsk_redirect in driver mode", -err);

	if (posix_memalign(&bufs, getpagesize(), NUM_FRAMES * FRAME_SIZE))
		return fail(mode, "umem buffer", ENOMEM);
	err = xsk_umem__create(&umem, bufs, NUM_FRAMES * FRAME_SIZE, &r.fill, &r.comp, &ucfg);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, "umem", -err);
	}
	// Every frame on the fill ring before the bind: the driver takes its first
	// buffers from it as the socket is enabled on the queue.
	if (xsk_ring_prod__reserve(&r.fill, NUM_FRAMES, &idx) != NUM_FRAMES)
		return fail(mode, "fill ring", ENOSPC);
	for (i = 0; i < NUM_FRAMES; i++)
		*xsk_ring_prod__fill_addr(&r.fill, idx++) = (__u64)i * FRAME_SIZE;
	xsk_ring_prod__submit(&r.fill, NUM_FRAMES);

	err = xsk_socket__create(&r.xsk, argv[1], queue, umem, &r.rx, NULL, &cfg);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, strcmp(mode, "zerocopy") ? "bind with XDP_COPY" : "bind with XDP_ZEROCOPY", -err);
	}
	r.fd = xsk_socket__fd(r.xsk);
	err = xsk_socket__update_xskmap(r.xsk, map_fd);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, "xskmap update", -err);
	}
	getsockopt(r.fd, SOL_XDP, XDP_OPTIONS, &opts, &optlen);
	printf("{\"ready\": true, \"mode\": \"%s\", \"zerocopy\": %s, \"queue\": %u, \"frames\": %u}\n", mode,
	       opts.flags & XDP_OPTIONS_ZEROCOPY ? "true" : "false", queue, NUM_FRAMES);
	fflush(stdout);

	for (;;) {
		struct pollfd pfds[2] = { { .fd = r.fd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
		struct signalfd_siginfo si;

		poll(pfds, 2, 100);
		read_rx(&r);
		if (!(pfds[1].revents & POLLIN) || read(sfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo != SIGUSR1)
			break;
		report(&r, ++snapshots, mode, opts.flags & XDP_OPTIONS_ZEROCOPY);
	}
	xsk_socket__delete(r.xsk);
	xsk_umem__delete(umem);
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	return 0;
}
