/* meshgate DPDK shim: exports, as plain functions, the DPDK calls that are
 * `static inline` in the headers (burst I/O, mbuf access) and wraps the calls
 * whose arguments are large structs (port configuration, stats, link), so the
 * Rust side declares only small, stable signatures and never mirrors DPDK's
 * struct layouts.  Every function is prefixed `mg_`. */
#include <errno.h>
#include <string.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

int mg_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
int mg_eal_cleanup(void) { return rte_eal_cleanup(); }
int mg_errno(void) { return rte_errno; }
const char *mg_strerror(int err) { return rte_strerror(err); }

uint16_t mg_eth_dev_count_avail(void) { return rte_eth_dev_count_avail(); }
int mg_eth_dev_is_valid_port(uint16_t port) { return rte_eth_dev_is_valid_port(port); }

/* Driver name and the queue limits the driver reports. */
int mg_eth_dev_info(uint16_t port, char *driver, size_t driver_len, uint16_t *max_rx_queues,
                    uint16_t *max_tx_queues, uint64_t *rss_offloads) {
    struct rte_eth_dev_info info;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0)
        return rc;
    snprintf(driver, driver_len, "%s", info.driver_name ? info.driver_name : "");
    *max_rx_queues = info.max_rx_queues;
    *max_tx_queues = info.max_tx_queues;
    *rss_offloads = info.flow_type_rss_offloads;
    return 0;
}

/* Configures `port` with the given queue counts.  With `rss` and more than
 * one receive queue, flows are spread by the Toeplitz hash over IPv4/TCP/UDP
 * (restricted to what the driver offers). */
int mg_eth_dev_configure(uint16_t port, uint16_t nb_rx, uint16_t nb_tx, int rss, const uint8_t *rss_key,
                         uint8_t rss_key_len) {
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    memset(&conf, 0, sizeof(conf));
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0)
        return rc;
    if (rss && nb_rx > 1) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = (uint8_t *)rss_key;
        conf.rx_adv_conf.rss_conf.rss_key_len = rss_key_len;
        conf.rx_adv_conf.rss_conf.rss_hf =
            (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    }
    return rte_eth_dev_configure(port, nb_rx, nb_tx, &conf);
}

int mg_eth_rx_queue_setup(uint16_t port, uint16_t queue, uint16_t nb_desc, struct rte_mempool *pool) {
    int socket = rte_eth_dev_socket_id(port);
    if (socket < 0)
        socket = (int)rte_socket_id();
    return rte_eth_rx_queue_setup(port, queue, nb_desc, (unsigned)socket, NULL, pool);
}

int mg_eth_tx_queue_setup(uint16_t port, uint16_t queue, uint16_t nb_desc) {
    int socket = rte_eth_dev_socket_id(port);
    if (socket < 0)
        socket = (int)rte_socket_id();
    return rte_eth_tx_queue_setup(port, queue, nb_desc, (unsigned)socket, NULL);
}

int mg_eth_dev_start(uint16_t port) { return rte_eth_dev_start(port); }
int mg_eth_dev_stop(uint16_t port) { return rte_eth_dev_stop(port); }
int mg_eth_dev_close(uint16_t port) { return rte_eth_dev_close(port); }
int mg_eth_promiscuous_enable(uint16_t port) { return rte_eth_promiscuous_enable(port); }
int mg_eth_promiscuous_disable(uint16_t port) { return rte_eth_promiscuous_disable(port); }
int mg_eth_promiscuous_get(uint16_t port) { return rte_eth_promiscuous_get(port); }

int mg_eth_macaddr_get(uint16_t port, uint8_t out[6]) {
    struct rte_ether_addr addr;
    int rc = rte_eth_macaddr_get(port, &addr);
    if (rc == 0)
        memcpy(out, addr.addr_bytes, 6);
    return rc;
}

int mg_eth_link_get_nowait(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof(link));
    int rc = rte_eth_link_get_nowait(port, &link);
    if (rc == 0) {
        *speed_mbps = link.link_speed;
        *up = link.link_status;
        *full_duplex = link.link_duplex;
    }
    return rc;
}

/* Port counters, flattened: [ipackets, opackets, ibytes, obytes, imissed,
 * ierrors, oerrors, rx_nombuf]. */
int mg_eth_stats_get(uint16_t port, uint64_t out[8]) {
    struct rte_eth_stats s;
    int rc = rte_eth_stats_get(port, &s);
    if (rc == 0) {
        out[0] = s.ipackets;
        out[1] = s.opackets;
        out[2] = s.ibytes;
        out[3] = s.obytes;
        out[4] = s.imissed;
        out[5] = s.ierrors;
        out[6] = s.oerrors;
        out[7] = s.rx_nombuf;
    }
    return rc;
}

int mg_eth_stats_reset(uint16_t port) { return rte_eth_stats_reset(port); }

uint16_t mg_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t mg_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mempool *mg_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache, uint16_t data_room) {
    return rte_pktmbuf_pool_create(name, n, cache, 0, data_room, (int)rte_socket_id());
}
void mg_mempool_free(struct rte_mempool *mp) { rte_mempool_free(mp); }
unsigned mg_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

struct rte_mbuf *mg_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
void mg_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
uint8_t *mg_pktmbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
/* Length of the first segment: meshgate configures no scatter, so frames are single-segment. */
uint16_t mg_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t mg_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t mg_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t mg_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint8_t *mg_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return (uint8_t *)rte_pktmbuf_append(m, len); }
int mg_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
/* The RSS hash the NIC computed, if any (0 when the driver gave none). */
uint32_t mg_pktmbuf_rss_hash(const struct rte_mbuf *m) {
    return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) ? m->hash.rss : 0;
}
