// The payer's status page, live: follows the execution's event stream (the client token is in
// this page's cookie, sent with the same-origin request) and updates the page in place.
// Values are set as text only, never as HTML.
(function () {
  "use strict";
  var root = document.getElementById("execution");
  if (!root || !window.EventSource) return;
  var words = JSON.parse(document.getElementById("words").textContent);
  var terminal = { workflow_succeeded: 1, workflow_failed: 1, workflow_cancelled: 1 };
  var id = root.getAttribute("data-execution-id");
  var source = new EventSource("/v1/public/executions/" + encodeURIComponent(id) + "/events");

  function show(elementId, visible) {
    var element = document.getElementById(elementId);
    if (visible) element.removeAttribute("hidden");
    else element.setAttribute("hidden", "");
    return element;
  }

  function render(view) {
    document.getElementById("status").textContent = words.status[view.status] || view.status;
    document.getElementById("payment").textContent =
      words.payment[view.paymentStatus] || view.paymentStatus;
    var payable = view.status === "awaiting_payment" && !!view.checkoutUrl;
    show("pay", payable);
    if (payable) document.getElementById("pay-link").setAttribute("href", view.checkoutUrl);
    show("reason", !!view.statusReason).textContent = view.statusReason || "";
    var hasResult = view.responsePayload !== null && view.responsePayload !== undefined;
    show("result", hasResult).textContent = hasResult
      ? JSON.stringify(view.responsePayload, null, 2)
      : "";
    document.title = document.getElementById("workflow").textContent + ": " +
      (words.status[view.status] || view.status);
    root.setAttribute("data-status", view.status);
  }

  source.addEventListener("execution", function (event) {
    var view = JSON.parse(event.data);
    render(view);
    if (terminal[view.status]) source.close(); // the end: nothing more will come
  });
})();
