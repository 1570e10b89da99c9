// Every page: a button marked data-opens-dialog opens the <dialog> right after it (a
// confirmation). A listener here rather than onclick attributes, so that the
// Content-Security-Policy can refuse every inline script.
document.addEventListener("click", function (e) {
  var button = e.target.closest && e.target.closest("[data-opens-dialog]");
  var dialog = button && button.nextElementSibling;
  if (dialog && dialog.showModal) dialog.showModal();
});
