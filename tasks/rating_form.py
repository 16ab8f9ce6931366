"""The listening page's blind rating form (MUSHRA, ITU-R BS.1534-3), as one inline script with no
dependency: the listener names themselves and starts; each clip's versions (every output, the
hidden reference, the anchor) come lettered A, B, … in an order drawn for this listener; a slider
per version, 0–100 on the standard's five-interval scale; submit is possible once every version
was moved; then the names are revealed and the ratings export as a JSON file
(schemas/ratings.RatingsFile) for `reinstrument ratings import`."""
from __future__ import annotations

FORM_JS = r"""
(() => {
  const data = JSON.parse(document.getElementById('rating-data').textContent);
  const $ = id => document.getElementById(id);
  const SCALE = 'bad 0–20 · poor 20–40 · fair 40–60 · good 60–80 · excellent 80–100';
  let state = null;
  const rng = seed => () => {  // mulberry32: a per-listener order that a page reload does not repeat
    seed = seed + 0x6D2B79F5 | 0; let t = Math.imul(seed ^ seed >>> 15, 1 | seed);
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t; return ((t ^ t >>> 14) >>> 0) / 4294967296;
  };
  const hash = s => { let h = 2166136261; for (const c of s) { h ^= c.codePointAt(0); h = Math.imul(h, 16777619); } return h >>> 0; };
  const shuffled = (list, next) => {
    const a = list.slice();
    for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(next() * (i + 1)); [a[i], a[j]] = [a[j], a[i]]; }
    return a;
  };
  const refresh = () => {
    const left = state.trials.reduce((n, t) => n + t.order.length - t.touched.size, 0);
    $('submit').disabled = left > 0;
    $('status').textContent = left ? `${left} version(s) left to rate` : 'ready to submit';
  };
  $('start').addEventListener('click', () => {
    const listener = $('listener').value.trim();
    if (!listener) { $('status').textContent = 'enter your name first'; return; }
    const next = rng(hash(`${listener}|${Date.now()}|${Math.random()}`));
    state = {listener, trials: data.trials.map(t => ({clip_id: t.clip_id, order: shuffled(t.conditions, next),
                                                      scores: {}, touched: new Set()}))};
    const root = $('trials');
    root.textContent = '';
    state.trials.forEach((t, ti) => {
      const div = document.createElement('div');
      div.className = 'trial';
      const h = document.createElement('h3');
      h.textContent = data.trials[ti].title;
      const player = src => Object.assign(document.createElement('audio'), {controls: true, preload: 'none', src});
      const ref = document.createElement('figure');
      ref.className = 'player';
      const cap = document.createElement('figcaption');
      cap.textContent = 'reference';
      ref.append(cap, player(data.trials[ti].reference));
      const scale = document.createElement('p');
      scale.className = 'revealed';
      scale.textContent = SCALE;
      div.append(h, ref, scale);
      t.order.forEach((c, k) => {
        const row = document.createElement('div');
        row.className = 'cond';
        row.innerHTML = '<b></b><input type="range" min="0" max="100" step="1" value="50"><output>50</output>'
          + '<span class="revealed" hidden></span>';
        row.querySelector('b').textContent = String.fromCharCode(65 + k);
        row.querySelector('b').after(player(c.src));
        const slider = row.querySelector('input');
        slider.setAttribute('aria-label', `clip ${ti + 1}, version ${String.fromCharCode(65 + k)}`);
        slider.addEventListener('input', () => {
          row.querySelector('output').textContent = slider.value;
          t.scores[k] = Number(slider.value);
          t.touched.add(k);
          refresh();
        });
        div.appendChild(row);
      });
      root.appendChild(div);
    });
    $('start').disabled = true;
    $('listener').disabled = true;
    refresh();
  });
  $('submit').addEventListener('click', () => {
    const out = {format: data.format, version: 1, page_id: data.page_id, listener: state.listener,
                 submitted_at: new Date().toISOString(),
                 trials: state.trials.map(t => ({clip_id: t.clip_id,
                   ratings: t.order.map((c, k) => ({condition: c.name, score: t.scores[k], position: k}))}))};
    document.querySelectorAll('#trials .trial').forEach((div, ti) => div.querySelectorAll('.cond').forEach((row, k) => {
      const name = row.querySelector('.revealed');
      name.textContent = state.trials[ti].order[k].name;
      name.hidden = false;
      row.querySelector('input').disabled = true;
    }));
    const a = $('export');
    a.href = URL.createObjectURL(new Blob([JSON.stringify(out, null, 1)], {type: 'application/json'}));
    a.download = `ratings-${data.page_id}-${state.listener.replace(/[^A-Za-z0-9_-]+/g, '_')}.json`;
    a.hidden = false;
    $('submit').disabled = true;
    $('status').textContent = 'submitted: export the ratings, then `reinstrument ratings import` them';
  });
})();
"""
