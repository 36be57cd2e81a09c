// AF_XDP receiver of the xsk-zero-copy claim: one socket on IFNAME's queue QUEUE,
// bound in zero-copy or copy mode (the bind fails if the driver cannot do the mode
// asked for), xsk_redirect.o attached in driver mode to feed it. Prints "ready"
// once bound, then reads frames until COUNT arrived or TIMEOUT_MS passed without
// one, recycling each buffer to the fill ring, and prints one JSON line. It then
// waits for SIGINT or SIGTERM before it takes the socket and the program down:
// detaching XDP resets the driver's rings, which the caller's probes must not see.
//
//   xsk_rx IFNAME QUEUE zerocopy|copy COUNT TIMEOUT_MS XSK_REDIRECT_OBJ
#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#define NUM_FRAMES 4096
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define BATCH 64

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

int main(int argc, char **argv)
{
	struct xsk_socket_config cfg = {
		.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS,
		.tx_size = 0,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = XDP_FLAGS_DRV_MODE,
	};
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp, rx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct bpf_object *obj;
	struct xdp_options opts = { 0 };
	socklen_t optlen = sizeof(opts);
	unsigned long long received = 0, bytes = 0;
	unsigned int ifindex, queue, idx, i;
	long count, timeout_ms;
	const char *mode;
	void *bufs;
	int prog_fd, map_fd, err, sig;
	sigset_t stop;
	double started, last;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, NULL);  // taken by sigwait() once the frames are in
	if (argc != 7 || (strcmp(argv[3], "zerocopy") && strcmp(argv[3], "copy"))) {
		fprintf(stderr, "usage: %s IFNAME QUEUE zerocopy|copy COUNT TIMEOUT_MS XSK_REDIRECT_OBJ\n", argv[0]);
		return 2;
	}
	mode = argv[3];
	ifindex = if_nametoindex(argv[1]);
	queue = atoi(argv[2]);
	count = atol(argv[4]);
	timeout_ms = atol(argv[5]);
	if (!ifindex)
		return fail(mode, argv[1], errno);
	cfg.bind_flags = strcmp(mode, "zerocopy") ? XDP_COPY : XDP_ZEROCOPY;

	obj = bpf_object__open_file(argv[6], NULL);
	if (!obj || bpf_object__load(obj))
		return fail(mode, "loading xsk_redirect.o", errno);
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "xsk_redirect"));
	map_fd = bpf_object__find_map_fd_by_name(obj, "xsks");
	err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE, NULL);
	if (err)
		return fail(mode, "attaching xsk_redirect in driver mode", -err);

	if (posix_memalign(&bufs, getpagesize(), NUM_FRAMES * FRAME_SIZE))
		return fail(mode, "umem buffer", ENOMEM);
	err = xsk_umem__create(&umem, bufs, NUM_FRAMES * FRAME_SIZE, &fill, &comp, NULL);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, "umem", -err);
	}
	err = xsk_socket__create(&xsk, argv[1], queue, umem, &rx, NULL, &cfg);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, strcmp(mode, "zerocopy") ? "bind with XDP_COPY" : "bind with XDP_ZEROCOPY", -err);
	}
	err = xsk_socket__update_xskmap(xsk, map_fd);
	if (err) {
		bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
		return fail(mode, "xskmap update", -err);
	}
	getsockopt(xsk_socket__fd(xsk), SOL_XDP, XDP_OPTIONS, &opts, &optlen);

	// Every umem frame the fill ring holds goes to the driver.
	if (xsk_ring_prod__reserve(&fill, XSK_RING_PROD__DEFAULT_NUM_DESCS, &idx) !=
	    XSK_RING_PROD__DEFAULT_NUM_DESCS)
		return fail(mode, "fill ring", ENOSPC);
	for (i = 0; i < XSK_RING_PROD__DEFAULT_NUM_DESCS; i++)
		*xsk_ring_prod__fill_addr(&fill, idx++) = (unsigned long long)i * FRAME_SIZE;
	xsk_ring_prod__submit(&fill, XSK_RING_PROD__DEFAULT_NUM_DESCS);

	printf("ready\n");
	fflush(stdout);
	started = last = now();
	while (received < (unsigned long long)count && (now() - last) * 1000 < timeout_ms) {
		struct pollfd pfd = { .fd = xsk_socket__fd(xsk), .events = POLLIN };
		unsigned int got, idx_rx = 0, idx_fill = 0;

		poll(&pfd, 1, 100);
		got = xsk_ring_cons__peek(&rx, BATCH, &idx_rx);
		if (!got)
			continue;
		while (xsk_ring_prod__reserve(&fill, got, &idx_fill) != got)
			;
		for (i = 0; i < got; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, idx_rx++);

			bytes += d->len;
			*xsk_ring_prod__fill_addr(&fill, idx_fill++) = xsk_umem__extract_addr(d->addr);
		}
		xsk_ring_prod__submit(&fill, got);
		xsk_ring_cons__release(&rx, got);
		received += got;
		last = now();
	}
	printf("{\"bound\": true, \"mode\": \"%s\", \"zerocopy\": %s, \"received\": %llu, \"bytes\": %llu, "
	       "\"seconds\": %.3f}\n", mode, opts.flags & XDP_OPTIONS_ZEROCOPY ? "true" : "false", received, bytes,
	       last - started);
	fflush(stdout);
	sigwait(&stop, &sig);
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	return 0;
}
