/* fmtest HTML scoreboard: renders a case's details only when it is opened, so a run with thousands of
   images opens instantly. Per-image rows are built with textContent (model output is never parsed as HTML). */
(function () {
  "use strict";
  var PAGE_SIZE = 50;
  var NUMERIC = { score: true, iou: true };

  function caseData(details) {
    var script = document.getElementById("fm-case-data-" + details.dataset.index);
    return JSON.parse(script.textContent);
  }

  function renderCase(details) {
    if (details.dataset.rendered) return;
    var data = caseData(details);
    var body = details.querySelector(".case-body");
    body.innerHTML = data.detail_html;  // built and escaped in Python
    var holder = body.querySelector(".images");
    if (holder && data.rows.length) {
      var table = new ImageTable(holder, data.columns, data.rows);
      body.querySelectorAll(".thumbs figure").forEach(function (fig) {
        fig.addEventListener("click", function () { table.showOnly(fig.dataset.imageId); });
      });
    }
    details.dataset.rendered = "1";
  }

  function ImageTable(holder, columns, rows) {
    this.columns = columns;
    this.rows = rows;
    this.sortKey = null;
    this.sortDir = 1;
    this.page = 0;
    this.search = holder.querySelector("input[type=search]");
    this.outcome = holder.querySelector("select.outcome-filter");
    this.tbody = holder.querySelector("tbody");
    this.status = holder.querySelector(".page-status");
    this.prev = holder.querySelector("button.prev");
    this.next = holder.querySelector("button.next");
    var self = this;
    this.search.addEventListener("input", function () { self.page = 0; self.render(); });
    this.outcome.addEventListener("change", function () { self.page = 0; self.render(); });
    this.prev.addEventListener("click", function () { self.page -= 1; self.render(); });
    this.next.addEventListener("click", function () { self.page += 1; self.render(); });
    holder.querySelectorAll("th[data-key] button").forEach(function (button) {
      button.addEventListener("click", function () { self.sortBy(button.parentElement); });
    });
    this.render();
  }

  ImageTable.prototype.showOnly = function (imageId) {
    this.search.value = imageId;
    this.outcome.value = "";
    this.page = 0;
    this.render();
  };

  ImageTable.prototype.sortBy = function (th) {
    var key = th.dataset.key;
    this.sortDir = this.sortKey === key ? -this.sortDir : 1;
    this.sortKey = key;
    th.parentElement.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", this.sortDir > 0 ? "ascending" : "descending");
    this.page = 0;
    this.render();
  };

  ImageTable.prototype.visibleRows = function () {
    var cols = this.columns, text = this.search.value.trim().toLowerCase(), want = this.outcome.value;
    var iOutcome = cols.indexOf("outcome");
    var rows = this.rows.filter(function (row) {
      if (want === "miss" ? !(row[iOutcome] === "slip" || row[iOutcome] === "false alarm")
                          : want && row[iOutcome] !== want) return false;
      if (!text) return true;
      return row.some(function (v) { return v !== null && String(v).toLowerCase().indexOf(text) >= 0; });
    });
    if (this.sortKey !== null) {
      var i = cols.indexOf(this.sortKey), dir = this.sortDir, numeric = NUMERIC[this.sortKey];
      rows.sort(function (a, b) {
        var x = a[i], y = b[i];
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);  // missing last
        return dir * (numeric ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true }));
      });
    }
    return rows;
  };

  ImageTable.prototype.render = function () {
    var rows = this.visibleRows(), cols = this.columns;
    var pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    this.page = Math.min(Math.max(this.page, 0), pages - 1);
    var start = this.page * PAGE_SIZE, shown = rows.slice(start, start + PAGE_SIZE);
    var fragment = document.createDocumentFragment();
    shown.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = "r-" + String(row[cols.indexOf("outcome")]).replace(/\s+/g, "-");
      row.forEach(function (value, j) {
        var td = document.createElement("td"), key = cols[j];
        td.className = key + (NUMERIC[key] ? " num" : "");
        if (value === null) {
          td.textContent = "";
        } else if (NUMERIC[key]) {
          td.textContent = Number(value).toFixed(3);
        } else if (key === "reasoning" && String(value).length > 160) {
          var text = document.createElement("div");
          text.className = "clamped";
          text.title = "click to show all";
          text.textContent = String(value);
          text.addEventListener("click", function () { text.classList.toggle("clamped"); });
          td.appendChild(text);
        } else {
          td.textContent = String(value);
        }
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    });
    this.tbody.replaceChildren(fragment);
    this.status.textContent = rows.length
      ? (start + 1) + "\u2013" + (start + shown.length) + " of " + rows.length +
        (rows.length < this.rows.length ? " (filtered from " + this.rows.length + ")" : "")
      : "no images match";
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
  };

  function openFromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target && target.matches("details.case")) {
      target.open = true;
      renderCase(target);
      target.scrollIntoView();
    }
  }

  function filterCases() {
    var shown = {};
    document.querySelectorAll(".counts input[data-outcome]").forEach(function (box) {
      shown[box.dataset.outcome] = box.checked;
    });
    document.querySelectorAll("details.case").forEach(function (d) {
      d.hidden = shown[d.dataset.outcome] === false;
    });
  }

  function renderPlots(details) {  // robustness plots wait in a <template> until their row is opened
    var template = details.querySelector("template");
    if (!template || details.dataset.rendered) return;
    details.appendChild(template.content.cloneNode(true));
    details.dataset.rendered = "1";
  }

  document.querySelectorAll("details.rob-plots").forEach(function (d) {
    d.addEventListener("toggle", function () { if (d.open) renderPlots(d); });
    if (d.open) renderPlots(d);
  });
  document.querySelectorAll("details.case").forEach(function (d) {
    d.addEventListener("toggle", function () { if (d.open) renderCase(d); });
  });
  document.querySelectorAll(".counts input[data-outcome]").forEach(function (box) {
    box.addEventListener("change", filterCases);
  });
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
})();
