// Upload with progress: the form posts as it would without script, through XMLHttpRequest (whose upload events
// report progress, which fetch does not), and the browser then goes to the run page the server names.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var line = document.getElementById("upload-progress-line");
  var bar = document.getElementById("upload-progress");
  var percent = document.getElementById("upload-percent");
  var error = document.getElementById("upload-error");

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        var done = Math.round((e.loaded / e.total) * 100);
        bar.value = done;
        percent.textContent = done + "%";
      }
    });
    request.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(request.responseText); } catch (ignored) { body = null; }
      if (request.status === 200 && body && body.location) {
        window.location.assign(body.location);
        return;
      }
      error.textContent = (body && body.error) || ("The upload failed (HTTP " + request.status + ").");
      error.hidden = false;
      button.disabled = false;
    });
    request.addEventListener("error", function () {
      error.textContent = "The upload failed: the server could not be reached.";
      error.hidden = false;
      button.disabled = false;
    });
    error.hidden = true;
    line.hidden = false;
    button.disabled = true;
    request.send(new FormData(form));
  });
})();
