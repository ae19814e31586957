// tokbench leaderboard page: client-side sorting and filtering, Pareto front of visible points.
// Works the same on the server and in the static export. Submitted text is only ever read
// from and written to the DOM as text (textContent / attributes), never as HTML.
(function () {
  "use strict";

  function cellValue(row, index, type) {
    var cell = row.children[index];
    var raw = cell ? cell.getAttribute("data-value") : "";
    if (raw === null || raw === "") { return null; }
    if (type === "number") { var v = parseFloat(raw); return isNaN(v) ? null : v; }
    return raw.toLowerCase();
  }

  function sortTable(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var type = th.getAttribute("data-type") || "text";
    var current = th.getAttribute("aria-sort");
    var descending;
    if (current) {
      descending = current === "ascending";
    } else {
      // First click: best first for metrics, ascending for everything else.
      descending = th.getAttribute("data-higher-is-better") === "true";
    }
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, type), y = cellValue(b, index, type);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }   // missing values last, either direction
      if (y === null) { return -1; }
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function number(input) {
    if (!input || input.value === "") { return null; }
    var v = parseFloat(input.value);
    return isNaN(v) ? null : v;
  }

  function visible(el, family, maxTokens, maxBits) {
    if (family && el.getAttribute("data-family") !== family) { return false; }
    var tokens = el.getAttribute("data-tokens"), bits = el.getAttribute("data-bits");
    if (maxTokens !== null && (tokens === null || tokens === "" || parseFloat(tokens) > maxTokens)) { return false; }
    if (maxBits !== null && (bits === null || bits === "" || parseFloat(bits) > maxBits)) { return false; }
    return true;
  }

  function redrawFront(svg) {
    var higher = svg.getAttribute("data-higher-is-better") === "true";
    var points = Array.prototype.slice.call(svg.querySelectorAll("circle.pt")).filter(function (c) {
      return !c.classList.contains("filtered");
    });
    points.sort(function (a, b) {
      var dx = parseFloat(a.getAttribute("data-x")) - parseFloat(b.getAttribute("data-x"));
      if (dx !== 0) { return dx; }
      var ya = parseFloat(a.getAttribute("data-y")), yb = parseFloat(b.getAttribute("data-y"));
      return higher ? yb - ya : ya - yb;
    });
    var best = -Infinity, path = [];
    svg.querySelectorAll("circle.pt").forEach(function (c) { c.classList.remove("on-front"); });
    points.forEach(function (c) {
      var y = parseFloat(c.getAttribute("data-y")) * (higher ? 1 : -1);
      if (y > best) {
        best = y;
        c.classList.add("on-front");
        path.push(c.getAttribute("cx") + "," + c.getAttribute("cy"));
      }
    });
    var line = svg.querySelector("polyline.front");
    if (line) { line.setAttribute("points", path.join(" ")); }
  }

  function applyFilters() {
    var family = (document.getElementById("filter-family") || {}).value || "";
    var maxTokens = number(document.getElementById("filter-max-tokens"));
    var maxBits = number(document.getElementById("filter-max-bits"));
    document.querySelectorAll("table.lb-table tbody tr").forEach(function (row) {
      row.hidden = !visible(row, family, maxTokens, maxBits);
    });
    document.querySelectorAll("svg.rd-plot").forEach(function (svg) {
      var board = svg.closest(".board");
      svg.querySelectorAll("circle.pt, text.pt-label").forEach(function (c) {
        var row = board.querySelector('tr[data-entry="' + c.getAttribute("data-entry") + '"]');
        c.classList.toggle("filtered", !row || row.hidden);
      });
      redrawFront(svg);
    });
  }

  // One table per test set (suite, protocol, resolution): the selector shows one at a time.
  // Without JavaScript every table is shown, one after the other, each ranked on its own.
  function showSetting(select) {
    var section = select.closest("section");
    section.querySelectorAll(".board").forEach(function (board) {
      board.hidden = board.getAttribute("data-setting") !== select.value;
    });
  }
  document.querySelectorAll("select[data-setting-select]").forEach(function (select) {
    select.addEventListener("change", function () { showSetting(select); });
    showSetting(select);
  });

  document.querySelectorAll("table.lb-table").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortTable(table, th); }); }
    });
  });
  var form = document.getElementById("filters");
  if (form) {
    form.addEventListener("submit", function (event) { event.preventDefault(); applyFilters(); });
    form.addEventListener("input", applyFilters);
    form.addEventListener("change", applyFilters);
    applyFilters();
  }
}());
