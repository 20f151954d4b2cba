/*
 * The cluster: this worker's identity, the node registry in Redis and the
 * control channel that carries commands to every worker of every node.
 *
 * Identity. A node id is 12 hex digits, the same in every worker of one
 * master (a hash of the host name, the master's pid and its start time);
 * a worker instance is "<node>-<worker slot>-<pid hex>" and a client id
 * "<instance>-<connection hex>", so client ids are unique across the
 * cluster and say which node and worker instance hold the connection.
 *
 * Registry (Redis, clock of Redis): a sorted set herald#workers of
 * instance ids scored by their expiry (now + cluster.node_ttl_ms), and a
 * hash herald#workerinfo of instance -> JSON figures. Every worker beats
 * every cluster.heartbeat_ms once its control subscription is confirmed;
 * entries past their expiry are dropped by whoever beats next, so a dead
 * node is gone from the registry within node_ttl_ms + heartbeat_ms.
 *
 * Control channel: every worker subscribes to herald#ctl and to its own
 * reply channel herald#rep#<instance>. hd_cluster_call() reads the live
 * instances from the registry, publishes the request on herald#ctl and
 * gathers one reply per instance until all are in or
 * cluster.call_timeout_ms passed; nodes with an instance that did not
 * answer are reported as missing. '#' cannot occur in a channel name, so
 * no client channel can collide with these.
 */
#ifndef HD_CLUSTER_H
#define HD_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct hd_conn;

#define HD_NODE_ID_LEN   12
#define HD_CLIENT_ID_MAX 64

extern char hd_node_id[HD_NODE_ID_LEN + 1];
extern char hd_instance_id[40];

void hd_cluster_init(void);
/* Leave the registry (best effort) and stop the timers. */
void hd_cluster_shutdown(void);

/* Redis glue (hd_worker.c's hooks). hd_cluster_message() returns true when
 * the message was on a control channel (consumed). */
void hd_cluster_sub_up(void);
void hd_cluster_sub_down(void);
void hd_cluster_cmd_up(void);
bool hd_cluster_message(const char *chan, size_t chan_len, const char *data,
                        size_t len);
bool hd_cluster_confirmed(const char *chan, size_t chan_len, bool sub);

/* Write c's client id into buf (HD_CLIENT_ID_MAX); returns its length. */
size_t hd_cluster_client_id(const struct hd_conn *c, char *buf);

/*
 * Run op with args (a JSON object, borrowed) on every worker of every live
 * node. cb runs exactly once: err 0 with replies (array of
 * {"node","worker","result"}) and missing (array of node ids that did not
 * answer in time; empty when complete), both valid during the callback;
 * or err HD_ERR_UNAVAILABLE (Redis down: nothing was sent). Returns 0, or
 * -ENOTCONN when Redis is down (cb does not run).
 */
typedef void hd_call_cb(int err, json_t *replies, json_t *missing, void *arg);
int hd_cluster_call(const char *op, json_t *args, hd_call_cb *cb, void *arg);

/* The registry's live instances: an object instance -> figures (valid
 * during the callback), or err != 0. 0, or a negative errno when nothing
 * was sent (-ENOTCONN: Redis is down). */
typedef void hd_nodes_cb(int err, json_t *instances, void *arg);
int          hd_cluster_instances(hd_nodes_cb *cb, void *arg);

/*
 * A local operation: what this worker does with a request from the
 * control channel. Returns the result object (new reference). Defined by
 * whoever owns the op (hd_capi.c); looked up by name.
 */
typedef json_t *hd_cluster_op_fn(json_t *args);
typedef struct hd_cluster_op {
    const char       *name;
    hd_cluster_op_fn *fn;
} hd_cluster_op_t;
extern const hd_cluster_op_t hd_cluster_ops[];

#endif
