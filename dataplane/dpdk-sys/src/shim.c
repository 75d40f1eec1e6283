/* Out-of-line wrappers for DPDK's static inline functions (see shim.h). */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include "shim.h"

uint16_t edgelb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t edgelb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *edgelb_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int edgelb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void edgelb_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

uint8_t *edgelb_mtod(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, uint8_t *);
}

uint32_t edgelb_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t edgelb_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint16_t edgelb_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

uint16_t edgelb_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t edgelb_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

int edgelb_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len) == NULL ? -1 : 0;
}

int edgelb_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len) == NULL ? -1 : 0;
}

int edgelb_set_len(struct rte_mbuf *m, uint16_t len)
{
	if (m->nb_segs != 1 || (uint32_t)m->data_off + len > m->buf_len)
		return -1;
	m->data_len = len;
	m->pkt_len = len;
	return 0;
}

void edgelb_reset(struct rte_mbuf *m)
{
	rte_pktmbuf_reset(m);
}

unsigned int edgelb_lcore_id(void)
{
	return rte_lcore_id();
}

int edgelb_errno(void)
{
	return rte_errno;
}

unsigned int edgelb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned int edgelb_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned int edgelb_ring_count(const struct rte_ring *r)
{
	return rte_ring_count(r);
}
