// The cluster (admin only): the nodes sharing the store, the shards each serves and how long its
// leases hold, shards nobody serves (highlighted), and the latest shard moves. Shard moves have no
// event on the stream, so the view re-reads GET /v1/cluster every POLL_MS while the page is
// visible, and at once when it becomes visible again.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { count, duration } from "../format.js";
import { clusterModel } from "../model.js";

const POLL_MS = 2000;

function shardList(shards) {
  if (shards.length === 0) return "none";
  return shards.length > 16 ? `${shards.slice(0, 16).join(", ")}, … (${shards.length})` : shards.join(", ");
}

function leaseText(node) {
  if (node.health === "down") return `down, last seen ${duration(node.seenAgoMs)} ago`;
  if (node.leaseLeftMs === null) return node.shards.length ? "held while it runs" : "no lease";
  return node.leaseLeftMs >= 0 ? `${duration(node.leaseLeftMs)} left` : `ran out ${duration(-node.leaseLeftMs)} ago`;
}

function nodesSection(model) {
  return h("section", { "aria-labelledby": "nodes-title" }, [
    h("h2", { id: "nodes-title" }, [`Nodes — ${model.nodes.filter((n) => n.health !== "down").length} alive`]),
    h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Nodes" }, [
      h("table", {}, [
        h("thead", {}, [h("tr", {}, ["Node", "URL", "Shards", "Serves", "Lease"].map((t) => h("th", { scope: "col" }, [t])))]),
        h("tbody", {}, model.nodes.map((node) =>
          h("tr", { dataset: { node: node.id, health: node.health, shards: String(node.shards.length) } }, [
            h("th", { scope: "row", class: "mono" }, [node.id, node.self ? h("span", { class: "muted" }, [" (this node)"]) : null]),
            h("td", { class: "mono" }, [node.url || "—"]),
            h("td", { class: "num" }, [count(node.shards.length)]),
            h("td", { class: "mono" }, [shardList(node.shards)]),
            h("td", { class: node.health === "down" ? "error" : null }, [leaseText(node)]),
          ]),
        )),
      ]),
    ]),
  ]);
}

function unownedSection(model) {
  const none = model.unowned.length === 0;
  return h("section", { "aria-labelledby": "unowned-title", class: none ? null : "alarm", dataset: { unowned: String(model.unowned.length) } }, [
    h("h2", { id: "unowned-title" }, [none ? "Unserved shards" : `Unserved shards — ${model.unowned.length}`]),
    none
      ? h("p", { class: "empty" }, [`Every one of the ${count(model.shardCount)} shards has an owner.`])
      : h("p", { class: "error", role: "alert" }, [
          `Nobody serves shard${model.unowned.length === 1 ? "" : "s"} ${shardList(model.unowned)}: their requests get 503 until a node takes them.`,
        ]),
  ]);
}

function movesSection(model) {
  return h("section", { "aria-labelledby": "moves-title" }, [
    h("h2", { id: "moves-title" }, ["Recent shard moves"]),
    model.moves.length === 0
      ? h("p", { class: "empty" }, [model.clustered ? "No shard has moved yet." : "A single node: shards never move."])
      : h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Shard moves" }, [
          h("table", {}, [
            h("thead", {}, [h("tr", {}, ["When", "Shard", "From", "To", "Why"].map((t) => h("th", { scope: "col" }, [t])))]),
            h("tbody", {}, model.moves.map((move) =>
              h("tr", { dataset: { shard: String(move.shard), reason: move.reason } }, [
                h("td", { title: new Date(move.atMs).toLocaleString(undefined, { hour12: false }) }, [`${duration(move.agoMs)} ago`]),
                h("td", { class: "num" }, [String(move.shard)]),
                h("td", { class: "mono" }, [move.from ?? "—"]),
                h("td", { class: "mono" }, [move.to ?? "—"]),
                h("td", {}, [move.reason, h("span", { class: "muted" }, [` · ${move.meaning}`])]),
              ]),
            )),
          ]),
        ]),
  ]);
}

function render(container, status) {
  const model = clusterModel(status);
  const summary = model.clustered
    ? `${count(model.shardCount)} shards, leases of ${duration(model.leaseTtlMs)}.`
    : `A single node serving its ${count(model.shardCount)} shard${model.shardCount === 1 ? "" : "s"}.`;
  replace(container, [
    h("div", { class: "view-head" }, [h("h1", {}, ["Cluster"]), h("p", { class: "muted" }, [summary])]),
    unownedSection(model),
    nodesSection(model),
    movesSection(model),
  ]);
  container.dataset.ready = "true";
}

/** Mounts the cluster view into `container`. */
export function clusterView(container, session) {
  let alive = true;
  let timer = null;

  if (session.scope?.role !== "admin") {
    replace(container, [
      h("div", { class: "view-head" }, [h("h1", {}, ["Cluster"])]),
      h("p", { class: "notice", dataset: { forbidden: "true" } }, ["The cluster is shown to admin tokens only; yours is a " +
        `${session.scope?.role ?? "non-admin"} token. Sign in with an admin token to see nodes and shards.`]),
    ]);
    container.dataset.ready = "true";
    return { unmount() {} };
  }

  const read = async () => {
    timer = null;
    try {
      const status = await api.cluster();
      if (alive) render(container, status);
    } catch (error) {
      if (alive && error.status !== 401) {
        replace(container, h("p", { class: "notice error", role: "alert" }, [`Could not load the cluster: ${error.message}`]));
      }
    }
    if (alive && !document.hidden) timer = setTimeout(read, POLL_MS);
  };
  const onVisibility = () => {
    if (!alive) return;
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (!timer) {
      read();
    }
  };
  document.addEventListener("visibilitychange", onVisibility);
  replace(container, h("p", { class: "loading", "aria-busy": "true" }, ["Loading cluster…"]));
  read();

  return {
    unmount() {
      alive = false;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
