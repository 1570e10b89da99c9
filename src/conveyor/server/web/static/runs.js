// The Run page: a live log stays scrolled to its end while its reader has not scrolled up.
(function () {
  function atEnd(el) {
    return el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
  }
  function isLog(el) {
    return el && el.matches && el.matches("pre.log");
  }
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    if (isLog(e.target)) e.target.dataset.follow = atEnd(e.target) ? "1" : "";
  });
  document.addEventListener("htmx:sseMessage", function (e) {
    if (isLog(e.target) && e.target.dataset.follow) e.target.scrollTop = e.target.scrollHeight;
  });
})();
