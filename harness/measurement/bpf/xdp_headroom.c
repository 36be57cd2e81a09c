// Record, per frame, how much headroom the program can claim in front of the
// packet, and the frame length; count frames per (grow, len) in a hash map.
//
// bpf_xdp_adjust_head(ctx, -d) succeeds while data - d stays at or above
// data_hard_start + sizeof(struct xdp_frame), so the largest d that succeeds is
// (data - data_hard_start) - sizeof(struct xdp_frame). The first call, with
// d = 0, changes nothing: the harness hooks a kprobe there to read data and
// data_hard_start of the driver's xdp_buff directly. Every successful grow is
// undone at once, and the frame passes on unchanged.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct headroom_key {
	__u32 grow;	/* largest d with bpf_xdp_adjust_head(ctx, -d) == 0 */
	__u32 len;	/* data_end - data */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct headroom_key);
	__type(value, __u64);
} headroom_seen SEC(".maps");

#define MAX_PROBE 1024	/* larger than any driver's XDP headroom */

SEC("xdp")
int xdp_headroom(struct xdp_md *ctx)
{
	struct headroom_key key = {};
	__u32 lo = 0, hi = MAX_PROBE;
	__u64 one = 1, *count;
	int i;

	bpf_xdp_adjust_head(ctx, 0);
	key.len = ctx->data_end - ctx->data;
	/* binary search for the largest growth that is accepted */
	for (i = 0; i < 11 && lo < hi; i++) {
		__u32 mid = (lo + hi + 1) / 2;

		if (bpf_xdp_adjust_head(ctx, -(int)mid) == 0) {
			bpf_xdp_adjust_head(ctx, (int)mid);
			lo = mid;
		} else {
			hi = mid - 1;
		}
	}
	key.grow = lo;
	count = bpf_map_lookup_elem(&headroom_seen, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&headroom_seen, &key, &one, BPF_NOEXIST);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
