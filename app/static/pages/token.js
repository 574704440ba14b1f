// An e-mailed link carries its token in the URL fragment, which never reaches a server or a
// Referer. Put it in the form, then take it out of the address bar (kept for this tab only,
// so that switching the language does not lose it); forget it once the page has answered.
"use strict";
(function () {
  var key = "roamsign-token:" + location.pathname;
  var form = document.getElementById("token-form");
  if (!form) {
    sessionStorage.removeItem(key);
    return;
  }
  var token = location.hash.length > 1 ? decodeURIComponent(location.hash.slice(1)) : "";
  if (token) {
    sessionStorage.setItem(key, token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem(key) || "";
  }
  document.getElementById("token").value = token;
  if (!token) {
    document.getElementById("token-missing").hidden = false;
  }
})();
