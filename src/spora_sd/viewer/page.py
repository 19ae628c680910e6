"""The HTML page of ``spora-sd view``: a tissue picker above Vitessce, everything from the same server.

The page imports the local bundle (``/static/vitessce-bundle.js``, an ES module exporting
``mountVitessce``), fetches ``/api/config/<tissue>.json`` and mounts Vitessce with it. The first
tissue's config is asked for by a script in the head, so it arrives while the bundle is fetched and
compiled (the server prepares it as it starts, see :class:`~spora_sd.viewer.server.ViewServer`), and
the bundle is announced by a ``modulepreload`` link. Picking another
tissue mounts the other tissue's config (and puts it in the address, ``?tissue=<id>``, so a reload
or a shared link shows the same tissue). Nothing is loaded from another host.

Examples
--------
>>> html = index_html({"cohort": "demo2025cohort", "modality": "imc", "tissues": ["a_1", "b_2"]})
>>> '<option value="b_2">b_2</option>' in html, "https://" in html
(True, False)
"""

from __future__ import annotations

import html
import json
import urllib.parse
from typing import Any

from spora_sd.viewer.bundle import BUNDLE_JS

__all__ = ["index_html"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; font-family: system-ui, sans-serif; background: #fff; }}
  header {{ display: flex; gap: 1em; align-items: center; padding: 6px 12px; border-bottom: 1px solid #ddd; }}
  header h1 {{ font-size: 15px; margin: 0; font-weight: 600; }}
  #status {{ color: #666; font-size: 13px; }}
  #vitessce {{ position: absolute; top: 42px; left: 0; right: 0; bottom: 0; }}
</style>
<link rel="modulepreload" href="/static/{js}{version}">
<script>
// the shown tissue's config is fetched while the bundle loads, not once it has run
const sporaTissues = {tissues};
const sporaAsked = new URL(window.location).searchParams.get("tissue");
const sporaFirst = sporaTissues.includes(sporaAsked) ? sporaAsked : sporaTissues[0];
const sporaFirstConfig = {{ tissue: sporaFirst, response: fetch(configUrl(sporaFirst)) }};
sporaFirstConfig.response.catch(() => {{}}); // a failed fetch is reported where it is awaited
function configUrl(tissue) {{
  return "/api/config/" + encodeURIComponent(tissue) + ".json";
}}
</script>
</head>
<body>
<header>
  <h1>{cohort} <small>({modality})</small></h1>
  <label>tissue <select id="tissue-picker">{options}</select></label>
  <span id="status"></span>
</header>
<div id="vitessce"></div>
<script type="module">
import * as bundle from "/static/{js}{version}";
// marks on the page's clock (benchmarks/bench_view.py reads them); the bundle's chunk-decoding counts
performance.mark("spora:bundle-evaluated");
window.sporaView = {{ decodeStats: bundle.decodeStats }};
const picker = document.getElementById("tissue-picker");
const status = document.getElementById("status");
const element = document.getElementById("vitessce");

async function show(tissue) {{
  status.textContent = "loading " + tissue + " ...";
  const early = sporaFirstConfig.tissue === tissue ? sporaFirstConfig.response : null;
  sporaFirstConfig.tissue = null; // fetched once: a later pick of the same tissue asks again
  const response = await (early || fetch(configUrl(tissue)));
  if (!response.ok) {{
    status.textContent = "cannot load " + tissue + ": " + (await response.text());
    return;
  }}
  const config = await response.json();
  performance.mark("spora:config-fetched");
  bundle.mountVitessce(element, config, element.clientHeight);
  performance.mark("spora:mounted");
  document.body.dataset.tissue = tissue;
  status.textContent = "";
}}

picker.addEventListener("change", () => {{
  const url = new URL(window.location);
  url.searchParams.set("tissue", picker.value);
  window.history.replaceState(null, "", url);
  show(picker.value);
}});
picker.value = sporaFirst;
show(picker.value);
</script>
</body>
</html>
"""


def index_html(summary: dict[str, Any], bundle_version: str = "") -> str:
    """The page for ``summary`` (``cohort``, ``modality``, ``tissues`` as :meth:`ViewSession.summary` gives).

    ``bundle_version`` goes into the bundle's URL (``?v=...``): the server lets browsers keep the
    bundle for a year, and a rebuilt bundle gets a new URL.
    """
    tissues = [str(t) for t in summary["tissues"]]
    options = "".join(f'<option value="{html.escape(t)}">{html.escape(t)}</option>' for t in tissues)
    return _PAGE.format(
        title=html.escape(f"{summary['cohort']}: spora-sd view"),
        cohort=html.escape(str(summary["cohort"])),
        modality=html.escape(str(summary["modality"])),
        options=options,
        # a JSON array inside a <script>: "</" must not end the script
        tissues=json.dumps(tissues).replace("</", "<\\/"),
        js=BUNDLE_JS,
        version=f"?v={urllib.parse.quote(bundle_version)}" if bundle_version else "",
    )
