// polyrise report: per-sample views of the data embedded in #polyrise-data. No network, no libraries; every text
// goes into the page through textContent, never as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("polyrise-data").textContent);
  const PAGE = 50;
  const KEYS = ["q", "iter", "lang", "status", "task", "model", "verdict"];
  const TABS = ["scores", "pairs", "evals"];
  const ALL = "";
  const state = { tab: "scores" };
  const shown = { pairs: PAGE, evals: PAGE };
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function str(v) {
    return v === null || v === undefined ? "-" : String(v);
  }

  function distinct(rows, key) {
    const values = [...new Set(rows.map((r) => str(r[key])))];
    return values.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  }

  function fill(key, values, extra) {
    const select = $("f-" + key);
    select.replaceChildren(el("option", null, "all"));
    select.firstChild.value = ALL;
    for (const [value, text] of [...(extra || []), ...values.map((v) => [v, v])]) {
      const option = el("option", null, text);
      option.value = value;
      select.appendChild(option);
    }
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    for (const key of KEYS) state[key] = params.get(key) || ALL;
    // a link with filters and no tab means the samples: the pairs
    state.tab = TABS.includes(params.get("tab")) ? params.get("tab") : KEYS.some((k) => state[k]) ? "pairs" : "scores";
    for (const key of KEYS) {
      const input = $("f-" + key);
      if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === state[key])) {
        const option = el("option", null, state[key] + " (none)");
        option.value = state[key];
        input.appendChild(option);
      }
      input.value = state[key];
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.tab !== "scores") params.set("tab", state.tab);
    for (const key of KEYS) if (state[key]) params.set(key, state[key]);
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  function hasText(row, fields) {
    const q = state.q.toLowerCase();
    return !q || fields.some((f) => row[f] !== null && row[f] !== undefined && String(row[f]).toLowerCase().includes(q));
  }

  function common(row) {
    return (!state.iter || str(row.iter) === state.iter) && (!state.lang || row.lang === state.lang);
  }

  function pairMatches(row) {
    const status = state.status;
    const statusOk = !status || row.status === status || (status === "dropped" && row.status !== "kept");
    return common(row) && statusOk && hasText(row, ["prompt", "id", ...row.sides]);
  }

  function evalMatches(row) {
    return (
      common(row) &&
      (!state.task || row.task === state.task) &&
      (!state.model || row.model === state.model) &&
      (!state.verdict || str(row.verdict) === state.verdict) &&
      hasText(row, ["prompt", "output", "gold", "id"])
    );
  }

  function side(name, text, right) {
    const box = el("div", "side " + name);
    const head = el("div", "side-head", name);
    if (right !== undefined) head.appendChild(el("span", right ? "right" : "wrong", right ? " right" : " wrong"));
    box.appendChild(head);
    box.appendChild(el("pre", text === null ? "missing" : "text", text === null ? "(translation failed)" : text));
    return box;
  }

  function pairCard(row) {
    const card = el("div", "pair");
    card.dataset.status = row.status;
    const meta = el("div", "meta");
    meta.append(
      el("span", null, "iteration " + str(row.iter)),
      el("span", null, row.lang),
      el("span", null, "id " + row.id),
      el("span", "status " + (row.status === "kept" ? "kept" : "dropped"), row.status === "kept" ? "kept" : "dropped: " + row.status)
    );
    card.appendChild(meta);
    card.appendChild(el("pre", "prompt", row.prompt));
    const sides = el("div", "sides");
    const correct = row.correct || [];
    sides.append(...row.sides.map((name, i) => side(name, row[name], correct[i])));
    card.appendChild(sides);
    return card;
  }

  function evalRow(row) {
    const tr = el("tr");
    tr.dataset.verdict = str(row.verdict);
    for (const key of ["iter", "model", "task", "lang", "id"]) tr.appendChild(el("td", "c-" + key, str(row[key])));
    for (const key of ["prompt", "output", "gold"]) {
      const td = el("td", "c-" + key);
      td.appendChild(el("pre", "text", str(row[key])));
      tr.appendChild(td);
    }
    tr.appendChild(el("td", "verdict " + str(row.verdict), str(row.verdict)));
    tr.appendChild(el("td", "c-detected", str(row.detected)));
    return tr;
  }

  function renderList(kind, rows, matches, make, target, noun) {
    const found = rows.filter(matches);
    const visible = found.slice(0, shown[kind]);
    target.replaceChildren(...visible.map(make));
    $(kind + "-count").textContent =
      found.length + " of " + rows.length + " " + noun + " match" + (found.length > visible.length ? "; showing the first " + visible.length : "");
    $(kind + "-count").dataset.matching = String(found.length);
    $(kind + "-more").hidden = found.length <= visible.length;
  }

  function render() {
    for (const tab of TABS) {
      $("tab-" + tab).hidden = tab !== state.tab;
      document.querySelector("[data-tab=" + tab + "]").classList.toggle("active", tab === state.tab);
    }
    $("samples").hidden = state.tab === "scores";
    for (const label of document.querySelectorAll("#filters [data-for]")) label.hidden = label.dataset.for !== state.tab;
    renderList("pairs", data.pairs, pairMatches, pairCard, $("pairs"), "pairs");
    renderList("evals", data.evals, evalMatches, evalRow, document.querySelector("#evals tbody"), "evaluation rows");
  }

  function update() {
    for (const key of KEYS) state[key] = $("f-" + key).value;
    shown.pairs = shown.evals = PAGE;
    writeHash();
    render();
  }

  const left = data.left_out;
  $("caps").textContent =
    "The page holds at most " + data.max_rows + " pairs per iteration and language, and " + data.max_rows +
    " evaluation rows per iteration, model, task and language; texts are clipped at " + data.max_chars +
    " characters. " +
    (left.pairs || left.evals
      ? "Left out of this page: " + left.pairs + " pairs, " + left.evals + " evaluation rows (the run's JSONL files hold every one)."
      : "Nothing was left out.");
  fill("iter", distinct([...data.pairs, ...data.evals], "iter"));
  fill("lang", distinct([...data.pairs, ...data.evals], "lang"));
  fill("status", distinct(data.pairs, "status"), [["dropped", "dropped (any reason)"]]);
  fill("task", distinct(data.evals, "task"));
  fill("model", distinct(data.evals, "model"));
  fill("verdict", distinct(data.evals, "verdict"));
  readHash();
  render();

  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("f-q").addEventListener("input", update);
  for (const key of KEYS.slice(1)) $("f-" + key).addEventListener("change", update);
  $("f-clear").addEventListener("click", () => {
    for (const key of KEYS) $("f-" + key).value = ALL;
    update();
  });
  for (const kind of ["pairs", "evals"]) {
    $(kind + "-more").addEventListener("click", () => {
      shown[kind] += PAGE;
      render();
    });
  }
  window.addEventListener("hashchange", () => {
    readHash();
    render();
  });
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => {
      state.tab = button.dataset.tab;
      writeHash();
      render();
    });
  }
})();
