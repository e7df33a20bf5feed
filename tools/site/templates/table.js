"use strict";
// Sort a table by the clicked column: numbers by value (empty cells last), text alphabetically.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th, col) {
    th.querySelector("button").addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[col].dataset.sort;
        if (!numeric) { return text; }
        return text === "" ? null : parseFloat(text);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) { return 0; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        var order = numeric ? (x < y ? -1 : 1) : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});

// The filter: track, hardware class, status and free text (name, what changed, authors, date, software).
(function () {
  var form = document.getElementById("filter");
  if (!form) { return; }
  var count = document.getElementById("filter-count");
  function apply() {
    var track = form.elements.track.value;
    var hardware = form.elements.hardware.value;
    var status = form.elements.status.value;
    var words = form.elements.text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    document.querySelectorAll("section.track").forEach(function (section) {
      var trackOk = !track || section.dataset.track === track;
      section.hidden = !trackOk;
      section.querySelectorAll("section.class").forEach(function (cls) {
        var visible = 0;
        var classOk = trackOk && (!hardware || cls.dataset.hardware === hardware);
        cls.querySelectorAll("tbody tr").forEach(function (row) {
          var text = row.dataset.search;
          var ok = classOk && (!status || row.dataset.status === status) &&
            words.every(function (w) { return text.indexOf(w) !== -1; });
          row.hidden = !ok;
          if (ok) { visible += 1; }
        });
        cls.hidden = visible === 0;
        shown += visible;
      });
    });
    count.textContent = shown + " of " + count.dataset.total + " records shown";
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
  form.hidden = false;
  apply();
})();
