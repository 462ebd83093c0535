// Starts GraphiQL on marketgraph's page (page.py). A file rather than an inline script, so
// that the page's Content-Security-Policy allows scripts from this server only.
// The page's URL keeps the query and variables (?q=, ?variables=), so a link shares them.
(function () {
  "use strict";

  var root = document.getElementById("graphiql");
  var params = new URLSearchParams(window.location.search);

  function keepInURL(name, value) {
    var next = new URLSearchParams(window.location.search);
    if (value) {
      next.set(name, value);
    } else {
      next.delete(name);
    }
    var search = next.toString();
    window.history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  var fetcher = GraphiQL.createFetcher({
    url: window.location.origin + window.location.pathname,
    headers: { accept: "application/graphql-response+json, application/json" },
    // The server answers one JSON document per request (no @defer, no multipart).
    enableIncrementalDelivery: false,
  });

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultQuery: root.dataset.query,
      query: params.get("q") || undefined,
      variables: params.get("variables") || undefined,
      defaultHeaders: root.dataset.headers,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: "headers",
      inputValueDeprecation: true,
      onEditQuery: function (query) {
        keepInURL("q", query);
      },
      onEditVariables: function (variables) {
        keepInURL("variables", variables);
      },
    }),
  );
})();
