{% raw %}
/* Leaderboard behaviour: sort by any column, filter rows, chart tooltips. No network, no eval;
   all text goes through textContent. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  var has = function (obj, key) { return Object.prototype.hasOwnProperty.call(obj, key); };

  /* ---- sorting: empty values always last; first click ascending, then toggles ---- */
  function sortTable(table, index, th) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.getAttribute("data-type") === "num";
    each(th.parentNode.children, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var va = a.cells[index] ? a.cells[index].getAttribute("data-sort") : "";
      var vb = b.cells[index] ? b.cells[index].getAttribute("data-sort") : "";
      var ea = va === null || va === "", eb = vb === null || vb === "";
      if (ea || eb) { return ea === eb ? 0 : (ea ? 1 : -1); }
      var r = numeric ? parseFloat(va) - parseFloat(vb) : va.localeCompare(vb);
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  each(document.querySelectorAll("table.sortable"), function (table) {
    each(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, index, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, index, th); }
      });
    });
  });

  /* ---- filtering: every word must occur in the row's text; plus a status choice ---- */
  function applyFilter(tableId) {
    var table = document.getElementById(tableId);
    var text = document.querySelector('input.filter[data-table="' + tableId + '"]');
    var status = document.querySelector('select.status-filter[data-table="' + tableId + '"]');
    var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0, total = 0;
    each(table.tBodies[0].rows, function (row) {
      var hay = row.getAttribute("data-search") || "";
      var ok = words.every(function (w) { return hay.indexOf(w) >= 0; }) &&
               (status.value === "all" || row.getAttribute("data-status") === status.value);
      row.hidden = !ok;
      total += 1;
      if (ok) { shown += 1; }
    });
    var counter = document.querySelector('.shown[data-table="' + tableId + '"]');
    if (counter) { counter.textContent = shown + " of " + total + " cells"; }
    filterCharts(table);
  }
  /* ---- the table filter also filters the charts: a marker (its shape, its label) is hidden
     ("filtered") when its cell's row is; a model's own front when none of its rows pass. Rows and
     markers are matched by (model, compression), compared as strings. The legend's "off" is a
     separate class, so a marker shows only when both allow it. ---- */
  function cellKey(model, compression) { return JSON.stringify([model, compression]); }
  function filterCharts(table) {
    var section = table.closest("section.task");
    if (!section) { return; }
    var hidden = {};
    each(table.tBodies[0].rows, function (row) {
      var model = row.getAttribute("data-model");
      if (model !== null && row.hidden) { hidden[cellKey(model, row.getAttribute("data-compression"))] = true; }
    });
    each(section.querySelectorAll("svg.chart"), function (svg) {
      var compressionOf = {}, modelShown = {};  /* data-row -> compression (labels carry only the row) */
      each(svg.querySelectorAll("circle.point[data-model]"), function (c) {
        var comp = c.getAttribute("data-compression"), model = c.getAttribute("data-model");
        compressionOf[c.getAttribute("data-row")] = comp;
        if (!has(hidden, cellKey(model, comp))) { modelShown[model] = true; }
      });
      each(svg.querySelectorAll("[data-model]"), function (el) {
        var model = el.getAttribute("data-model"), off;
        if (el.classList.contains("model-front")) {
          off = !has(modelShown, model);  /* a model's own front goes with its last marker */
        } else {
          var comp = el.hasAttribute("data-compression") ? el.getAttribute("data-compression")
            : compressionOf[el.getAttribute("data-row")];
          off = has(hidden, cellKey(model, comp));
        }
        el.classList.toggle("filtered", off);
      });
    });
  }
  each(document.querySelectorAll("input.filter, select.status-filter"), function (el) {
    var id = el.getAttribute("data-table");
    el.addEventListener("input", function () { applyFilter(id); });
    el.addEventListener("change", function () { applyFilter(id); });
  });

  /* ---- chart tooltips (details from the embedded JSON), row highlight, click to row ---- */
  var tip = document.getElementById("tooltip");
  function highlight(rowId, on) {
    var row = document.getElementById(rowId);
    if (row) { row.classList.toggle("hl", on); }
    each(document.querySelectorAll('circle.point[data-row="' + rowId + '"], path.shape[data-row="' + rowId + '"]'), function (c) {
      c.classList.toggle("hl", on);
    });
  }
  function showTip(point, x, y) {
    var info = data.tips[point.getAttribute("data-row")];
    if (!info) { return; }
    tip.textContent = "";
    var head = document.createElement("strong");
    head.textContent = info.title;
    tip.appendChild(head);
    info.lines.forEach(function (line) {
      var div = document.createElement("div");
      div.textContent = line;
      tip.appendChild(div);
    });
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(window.innerWidth - w - 4, x + 14)) + "px";
    tip.style.top = Math.max(4, Math.min(window.innerHeight - h - 4, y + 14)) + "px";
  }
  each(document.querySelectorAll("svg circle.point"), function (point) {
    var title = point.querySelector("title");
    if (title) {  /* the JS tooltip replaces the native one (kept in the file for no-JS) */
      point.setAttribute("aria-label", title.textContent);
      title.parentNode.removeChild(title);
    }
    var rowId = point.getAttribute("data-row");
    point.addEventListener("mouseenter", function (e) { showTip(point, e.clientX, e.clientY); highlight(rowId, true); });
    point.addEventListener("mousemove", function (e) { showTip(point, e.clientX, e.clientY); });
    point.addEventListener("mouseleave", function () { tip.hidden = true; highlight(rowId, false); });
    point.addEventListener("focus", function () {
      var r = point.getBoundingClientRect();
      showTip(point, r.right, r.bottom);
      highlight(rowId, true);
    });
    point.addEventListener("blur", function () { tip.hidden = true; highlight(rowId, false); });
    point.addEventListener("click", function () {
      var row = document.getElementById(rowId);
      if (row) { row.hidden = false; row.scrollIntoView({ block: "center" }); }
    });
  });
  each(document.querySelectorAll("table.leaderboard tbody tr"), function (row) {
    row.addEventListener("mouseenter", function () { highlight(row.id, true); });
    row.addEventListener("mouseleave", function () { highlight(row.id, false); });
  });
  /* ---- legend: an entry (a model, a compression or a runtime) hides or shows its markers,
     labels and (a model's) own front in its task's charts; a double-click, Shift+click or
     Shift+Enter shows only that entry of its kind, and again shows all. A marker shows when no
     kind hides it (names compared as strings, never put into a selector) ---- */
  var AXES = ["model", "compression", "runtime"];
  function legendButtons(section, axis) {
    return Array.prototype.filter.call(section.querySelectorAll("button.legend-toggle"),
      function (b) { return b.getAttribute("data-axis") === axis; });
  }
  function applyLegend(section) {
    var off = {};
    AXES.forEach(function (axis) {
      off[axis] = {};
      legendButtons(section, axis).forEach(function (b) {
        if (b.getAttribute("aria-pressed") === "false") { off[axis][b.getAttribute("data-value")] = true; }
      });
    });
    each(section.querySelectorAll("svg.chart [data-model]"), function (el) {
      el.classList.toggle("off", AXES.some(function (axis) {
        var v = el.getAttribute("data-" + axis);
        return v !== null && has(off[axis], v);
      }));
    });
  }
  function isolate(section, btn) {
    var value = btn.getAttribute("data-value");
    var buttons = legendButtons(section, btn.getAttribute("data-axis"));
    var alone = buttons.every(function (b) {
      return (b.getAttribute("aria-pressed") !== "false") === (b.getAttribute("data-value") === value);
    });
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", alone || b.getAttribute("data-value") === value ? "true" : "false");
    });
    applyLegend(section);
  }
  each(document.querySelectorAll("button.legend-toggle"), function (btn) {
    var section = btn.closest("section.task");
    btn.addEventListener("click", function (e) {
      if (e.shiftKey) { isolate(section, btn); return; }
      btn.setAttribute("aria-pressed", btn.getAttribute("aria-pressed") === "false" ? "true" : "false");
      applyLegend(section);
    });
    btn.addEventListener("keydown", function (e) {
      if (e.shiftKey && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); isolate(section, btn); }
    });
    /* the two clicks before a dblclick toggle the entry twice (no net change) */
    btn.addEventListener("dblclick", function (e) { e.preventDefault(); isolate(section, btn); });
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
{% endraw %}
