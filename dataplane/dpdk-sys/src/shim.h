/* Out-of-line wrappers for DPDK's static inline functions, which bindgen cannot bind. */
#ifndef EDGELB_DPDK_SHIM_H
#define EDGELB_DPDK_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t edgelb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t edgelb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *edgelb_pktmbuf_alloc(struct rte_mempool *mp);
int edgelb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n);
void edgelb_pktmbuf_free(struct rte_mbuf *m);
uint8_t *edgelb_mtod(const struct rte_mbuf *m);
uint32_t edgelb_pkt_len(const struct rte_mbuf *m);
uint16_t edgelb_data_len(const struct rte_mbuf *m);
uint16_t edgelb_nb_segs(const struct rte_mbuf *m);
uint16_t edgelb_headroom(const struct rte_mbuf *m);
uint16_t edgelb_tailroom(const struct rte_mbuf *m);
/* Grow at the front / shrink at the front; 0 on success, -1 when there is no room or data. */
int edgelb_prepend(struct rte_mbuf *m, uint16_t len);
int edgelb_adj(struct rte_mbuf *m, uint16_t len);
/* Set the length of a single-segment mbuf; -1 when it exceeds the buffer. */
int edgelb_set_len(struct rte_mbuf *m, uint16_t len);
/* Reset to empty with the default headroom. */
void edgelb_reset(struct rte_mbuf *m);
unsigned int edgelb_lcore_id(void);
int edgelb_errno(void);
unsigned int edgelb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int edgelb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int edgelb_ring_count(const struct rte_ring *r);
#endif
