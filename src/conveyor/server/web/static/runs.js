// The Run page: a log shows its end (its newest lines) first, and a live log stays
// scrolled to its end while its reader has not scrolled up.
(function () {
  function atEnd(el) {
    return el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
  }
  function isLog(el) {
    return el && el.matches && el.matches("pre.log");
  }
  function toEnd(root) {
    root.querySelectorAll("pre.log").forEach(function (el) {
      el.scrollTop = el.scrollHeight;
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    toEnd(document);
  });
  document.addEventListener("htmx:load", function (e) {
    // a step that appeared while the page was open (not an earlier page of a log)
    if (e.target.matches && e.target.matches("details.step")) toEnd(e.target);
  });
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    if (isLog(e.target)) e.target.dataset.follow = atEnd(e.target) ? "1" : "";
  });
  document.addEventListener("htmx:sseMessage", function (e) {
    if (isLog(e.target) && e.target.dataset.follow) e.target.scrollTop = e.target.scrollHeight;
  });
})();
