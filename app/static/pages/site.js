// The language switch comes back to the page it was chosen on.
"use strict";
(function () {
  var links = document.querySelectorAll("a[data-keep-path]");
  for (var i = 0; i < links.length; i++) {
    links[i].href = links[i].getAttribute("href") + "?next=" + encodeURIComponent(location.pathname);
  }
})();
