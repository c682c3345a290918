/* fmtest HTML scoreboard: renders a case's details only when it is opened, so a run with thousands of
   images opens instantly. Per-image rows are built with textContent (model output is never parsed as HTML).
   The image viewer loads an image's layers (files next to the page) only when that image is shown. */
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
      var viewerHolder = body.querySelector(".viewer");
      var viewer = viewerHolder && data.layers ? new Viewer(viewerHolder, data.layers, table) : null;
      body.querySelectorAll(".thumbs figure").forEach(function (fig) {
        fig.addEventListener("click", function () {
          table.showOnly(fig.dataset.imageId);
          if (viewer) viewer.show(fig.dataset.imageId);
        });
      });
      body.querySelectorAll(".confusion td[data-outcome]").forEach(function (cell) {
        cell.addEventListener("click", function () { table.showOutcome(cell.dataset.outcome); });
      });
    }
    details.dataset.rendered = "1";
  }

  function Viewer(holder, layers, table) {
    this.holder = holder;
    this.folder = layers.folder;
    this.files = layers.images;
    this.table = table;
    this.current = null;
    this.stage = holder.querySelector(".viewer-stage");
    this.reference = holder.querySelector(".viewer-reference");
    this.caption = holder.querySelector(".viewer-caption");
    this.position = holder.querySelector(".viewer-position");
    this.zoom = holder.querySelector("select.viewer-zoom");
    this.toggles = {};
    var self = this;
    holder.querySelectorAll("input[data-layer]").forEach(function (box) {
      self.toggles[box.dataset.layer] = box;
      box.addEventListener("change", function () { self.draw(); });
    });
    holder.querySelector(".viewer-prev").addEventListener("click", function () { self.step(-1); });
    holder.querySelector(".viewer-next").addEventListener("click", function () { self.step(1); });
    this.zoom.addEventListener("change", function () { self.draw(); });
    holder.addEventListener("keydown", function (e) {
      if (e.target.tagName === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
      var layer = { g: "gt", p: "prediction", s: "score_map", r: "reference" }[e.key];
      if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        self.step(e.key === "ArrowLeft" ? -1 : 1);
      } else if (layer && self.toggles[layer] && !self.toggles[layer].disabled) {
        self.toggles[layer].checked = !self.toggles[layer].checked;
        self.draw();
      } else {
        return;
      }
      e.preventDefault();
    });
    table.onRowClick = function (id) { self.show(id); self.holder.scrollIntoView({ block: "nearest" }); };
    window.addEventListener("resize", function () { if (self.current !== null) self.draw(); });
    var first = table.visibleIds().filter(function (id) { return self.files[id]; })[0];
    if (first) this.show(first);
  }

  Viewer.prototype.url = function (file) {
    return this.folder.split("/").concat([file]).map(encodeURIComponent).join("/");
  };

  Viewer.prototype.show = function (id) {
    this.current = id;
    this.table.highlight(id);
    this.draw();
  };

  Viewer.prototype.step = function (delta) {  // through the table's rows as filtered and sorted now
    var self = this;
    var ids = this.table.visibleIds().filter(function (id) { return self.files[id]; });
    if (!ids.length) return;
    var at = ids.indexOf(this.current);
    this.show(ids[at < 0 ? 0 : Math.min(Math.max(at + delta, 0), ids.length - 1)]);
  };

  Viewer.prototype.draw = function () {
    var files = this.files[this.current] || {}, self = this;
    Object.keys(this.toggles).forEach(function (layer) {
      var box = self.toggles[layer];
      box.disabled = !files[layer];
      box.parentElement.title = files[layer] ? "" : "not recorded for this image";
    });
    var zoom = this.zoom.value;
    this.holder.querySelectorAll("img.layer").forEach(function (img) {
      var layer = img.dataset.layer, wanted = layer === "image" || (self.toggles[layer] && self.toggles[layer].checked);
      var file = wanted ? files[layer] : null;
      img.hidden = !file;
      if (file && img.getAttribute("src") !== self.url(file)) img.src = self.url(file);  // loaded when shown
      if (!file) img.removeAttribute("src");
    });
    this.reference.hidden = !(files.reference && this.toggles.reference.checked);
    [this.stage, this.reference].forEach(function (figure) {
      figure.classList.toggle("zoomed", zoom !== "fit");
      var base = figure.querySelector("img.layer");
      var setWidth = function () { self.size(figure, base, zoom); };
      if (base.complete) setWidth(); else base.onload = setWidth;
    });
    var row = this.table.row(this.current);
    this.caption.textContent = row ? this.table.describe(row) : this.current;
    var ids = this.table.visibleIds().filter(function (id) { return self.files[id]; });
    var at = ids.indexOf(this.current);
    this.position.textContent = at < 0 ? "(not in the filtered table)" : (at + 1) + " of " + ids.length;
  };

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

  ImageTable.prototype.visibleIds = function () {
    var i = this.columns.indexOf("id");
    return this.visibleRows().map(function (row) { return row[i]; });
  };

  ImageTable.prototype.row = function (imageId) {
    var i = this.columns.indexOf("id");
    return this.rows.filter(function (row) { return row[i] === imageId; })[0] || null;
  };

  // "fit": the whole image in the pane, as wide as the pane allows and never taller than it; 2x and 4x are
  // multiples of that, so each step enlarges; "pixels": one layer pixel per screen pixel.
  Viewer.prototype.size = function (figure, base, zoom) {
    var stack = base.parentElement;
    if (!base.naturalWidth || figure.hidden) return;
    var style = getComputedStyle(figure);
    var roomW = figure.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    var roomH = parseFloat(style.maxHeight) || window.innerHeight * 0.8;
    var fit = Math.max(1, Math.min(roomW, (roomH - figure.querySelector("figcaption").offsetHeight) *
                                        base.naturalWidth / base.naturalHeight));
    stack.style.width = (zoom === "pixels" ? base.naturalWidth : zoom === "fit" ? fit : fit * Number(zoom)) + "px";
  };

  ImageTable.prototype.describe = function (row) {  // one line for the viewer's caption
    var cols = this.columns, get = function (key) { var i = cols.indexOf(key); return i < 0 ? null : row[i]; };
    var text = get("id") + ": " + get("label") + " \u2192 " + get("predicted") + " (" + get("outcome") + ")";
    if (get("score") !== null) text += ", score " + Number(get("score")).toFixed(3);
    if (get("iou") !== null) text += ", IoU " + Number(get("iou")).toFixed(3);
    if (get("error")) text += ", error: " + get("error");
    return text;
  };

  ImageTable.prototype.highlight = function (imageId) {
    this.selected = imageId;
    this.render();
  };

  ImageTable.prototype.showOutcome = function (outcome) {
    this.search.value = "";
    this.outcome.value = outcome;
    this.page = 0;
    this.render();
  };

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
    var iOutcome = cols.indexOf("outcome"), iLabel = cols.indexOf("label");
    var rows = this.rows.filter(function (row) {
      var outcome = row[iOutcome];
      if (want === "miss" ? !(outcome === "slip" || outcome === "false alarm")
          : want === "found" || want === "passed" ? !(outcome === "correct" && row[iLabel] === (want === "found" ? "NOK" : "OK"))
          : want && outcome !== want) return false;
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
    var fragment = document.createDocumentFragment(), self = this, iId = cols.indexOf("id");
    shown.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = "r-" + String(row[cols.indexOf("outcome")]).replace(/\s+/g, "-");
      if (row[iId] === self.selected) tr.classList.add("current");
      if (self.onRowClick) {
        tr.classList.add("viewable");
        tr.title = "show in the viewer";
        tr.addEventListener("click", function (e) {
          if (!e.target.closest(".clamped")) self.onRowClick(row[iId]);
        });
      }
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
