// The bulk move's progress bar: asks the server how far the job got, twice a second, and
// shows the finished page (its counts and report) once it is done, interrupted or failed.
"use strict";
(function () {
  var box = document.getElementById("enrolment");
  if (!box || box.hasAttribute("data-finished")) {
    return;
  }
  var bar = document.getElementById("progress");
  var done = document.getElementById("done");
  var url = box.getAttribute("data-progress-url");

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (answer.redirected || answer.status === 404) {
          location.reload(); // signed out, or the job is unknown: the page says which
          return null;
        }
        return answer.json();
      })
      .then(function (job) {
        if (!job) {
          return;
        }
        bar.value = job.done;
        done.textContent = String(job.done);
        if (job.finished) {
          location.reload();
        } else {
          setTimeout(poll, 500);
        }
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
})();
