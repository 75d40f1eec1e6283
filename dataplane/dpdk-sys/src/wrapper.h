/* The DPDK API edgelb binds: EAL, mempools and mbufs, ethdev, rings and the ring PMD. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include "shim.h"
