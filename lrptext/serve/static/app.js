// The explorer page: asks the server's JSON API and draws the answers. Text from documents and models is only ever
// set with textContent, never parsed as HTML.
"use strict";

const settings = JSON.parse(document.querySelector('meta[name="lrptext-settings"]').content);
const FOR = settings.colours.for;
const AGAINST = settings.colours.against;
const $ = (selector, root = document) => root.querySelector(selector);
const state = { models: [], model: null, lastInput: null, image: null, imageUrl: null, request: 0 };

document.documentElement.style.setProperty("--for", `rgb(${FOR.join(", ")})`);
document.documentElement.style.setProperty("--against", `rgb(${AGAINST.join(", ")})`);

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function format(value) {
  const magnitude = Math.abs(value);
  const text = magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e4) ? value.toExponential(3) : value.toFixed(4);
  return (value > 0 ? "+" : "") + text;
}

// The report's scale: red for, blue against, opacity |r| / the largest |r| of the explanation.
function colour(relevance, scale) {
  const alpha = scale > 0 ? Math.min(Math.abs(relevance) / scale, 1) : 0;
  const [r, g, b] = relevance > 0 ? FOR : AGAINST;
  return { css: `rgba(${r}, ${g}, ${b}, ${alpha.toFixed(3)})`, alpha, rgb: [r, g, b] };
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  let answer = null;
  try { answer = await response.json(); } catch (error) { answer = null; }
  if (!response.ok) {
    const message = answer && answer.error ? answer.error.message : `the server answered ${response.status}`;
    throw new Error(message);
  }
  return answer;
}

function setStatus(node, message, isError = false) {
  node.textContent = message;
  node.classList.toggle("error", isError);
}

// -- settings ---------------------------------------------------------------------------------------------------
function fillSelect(select, options, keepValue = true) {
  const previous = select.value;
  select.replaceChildren(...options.map(([value, label]) => element("option", { value, text: label })));
  if (keepValue && options.some(([value]) => value === previous)) select.value = previous;
}

function chooseModel(name) {
  const model = state.models.find((m) => m.name === name);
  state.model = model;
  fillSelect($("#composite"), model.composites.map((c) => [c, c]), false);
  $("#composite").value = model.default_composite;
  const labels = model.labels.map((l) => [l, l]);
  fillSelect($("#target"), [["", "the predicted label"], ...labels]);
  fillSelect($("#contrast"), [["", "(no contrast)"], ...labels]);
  updateContrast();
  updateCompare();
  const image = model.kind === "image";
  $("#text-input").hidden = image;
  $("#image-input").hidden = !image;
  $("#explain-hint").textContent = image ? "" : "or Ctrl+Enter in the document";
  if (image) $("#image-hint").textContent =
    `${model.size}×${model.size} pixels, ${model.channels === 1 ? "grayscale" : "RGB"}; never resized.`;
  state.lastInput = null;
  $("#layers").hidden = !model.layers;
  drawLayers(null);
}

function updateContrast() {
  const contrast = $("#contrast");
  contrast.disabled = !state.model.contrast || $("#target").value === "";
  if (contrast.disabled) contrast.value = "";
}

function updateCompare() {
  const model = state.model;
  const names = { gi: "gradient × input", ig: "integrated gradients" };
  const options = [["", "nothing"]];
  for (const c of model.composites) if (c !== $("#composite").value) options.push([`composite:${c}`, `LRP ${c}`]);
  for (const m of model.methods) if (m !== "lrp") options.push([`method:${m}`, names[m] || m]);
  fillSelect($("#compare"), options);
}

// -- explaining -------------------------------------------------------------------------------------------------
function requestFor(compare) {
  const model = state.model;
  const body = { model: model.name, composite: $("#composite").value, target: $("#target").value || null,
                 contrast: $("#contrast").value || null };
  if (compare) {
    const [kind, value] = compare.split(":");
    if (kind === "composite") body.composite = value;
    else { body.method = value; delete body.composite; }
  }
  return body;
}

function title(body) {
  if (body.method && body.method !== "lrp") return $("#compare").selectedOptions[0].textContent;
  return `LRP · ${body.composite}`;
}

async function explain() {
  const model = state.model;
  const input = model.kind === "image" ? state.image : $("#text").value;
  if (!input || (model.kind === "text" && !input.trim())) {
    setStatus($("#status"), model.kind === "image" ? "Choose an image first." : "Type or paste a document first.",
              true);
    return;
  }
  state.lastInput = input;
  const request = ++state.request;
  const compare = $("#compare").value;
  const bodies = [requestFor(null), compare ? requestFor(compare) : null];
  $("#results").setAttribute("aria-busy", "true");
  setStatus($("#status"), "Explaining…");
  try {
    const answers = await Promise.all(bodies.map((body, i) => body && call(model, body, input, i === 0)));
    if (request !== state.request) return;  // a newer request answers instead
    for (const [i, pane] of [$("#pane-a"), $("#pane-b")].entries()) {
      if (answers[i]) drawPane(pane, model, bodies[i], answers[i], input);
      else clearPane(pane);
    }
    drawLayers(answers[0].layers ? answers[0].layers[0] : null);
    setStatus($("#status"), "Done.");
  } catch (error) {
    if (request === state.request) setStatus($("#status"), error.message, true);
  } finally {
    if (request === state.request) $("#results").setAttribute("aria-busy", "false");
  }
}

function call(model, body, input, primary) {
  if (model.kind === "image") return api("/v1/explain-image", { ...body, images: [input] });
  return api("/v1/explain", { ...body, texts: [input], layers: primary && model.layers && !body.method });
}

function clearPane(pane) {
  $("h2", pane).textContent = "Comparison";
  $(".prediction", pane).textContent =
    "Choose what to compare with: another composite, gradient × input or integrated gradients.";
  $(".probabilities tbody", pane).replaceChildren();
  $(".scale", pane).textContent = "";
  $(".doc", pane).replaceChildren();
  $(".image", pane).replaceChildren();
  $(".inspect", pane).textContent = "";
}

function drawPane(pane, model, body, answer, input) {
  const result = model.kind === "image" ? answer.results[0] : answer.documents[0];
  const probabilities = model.kind === "image" ? result.probabilities : answer.probabilities[0];
  $("h2", pane).textContent = title(body);
  const against = result.contrast ? [" rather than ", element("span", { className: "label", text: result.contrast })]
    : [];
  const explainedScore = probabilities[answer.labels.indexOf(result.target)];
  $(".prediction", pane).replaceChildren(
    "prediction: ", element("span", { className: "label prediction", text: result.prediction }),
    ` (${result.score.toFixed(3)}) · explaining: `, element("span", { className: "label target", text: result.target }),
    ...against, ` (${explainedScore.toFixed(3)})`);
  $(".probabilities tbody", pane).replaceChildren(...answer.labels.map((label, i) => {
    const bar = element("span");
    bar.style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
    return element("tr", {}, [element("td", { text: label }),
                              element("td", {}, [element("span", { className: "prob-bar" }, [bar])]),
                              element("td", { text: probabilities[i].toFixed(3) })]);
  }));
  if (model.kind === "image") drawImage(pane, result, input);
  else drawWords(pane, result, input);
}

function drawWords(pane, doc, text) {
  const scale = Math.max(0, ...doc.words.map((w) => Math.abs(w.relevance)));
  $(".scale", pane).textContent = `colour scale: ±${format(scale).replace("+", "")}` +
    (doc.truncated ? " · longer than the model's window: later words were not read" : "") + readIn(doc);
  // offsets count code points (Python), JavaScript strings count UTF-16 units
  const chars = Array.from(text);
  const pieces = [];
  let cursor = 0;
  doc.words.forEach((w, i) => {
    pieces.push(chars.slice(cursor, w.start).join(""));
    const { css, alpha } = colour(w.relevance, scale);
    const span = element("span", { className: "w", title: `relevance ${format(w.relevance)}`, tabindex: i ? "-1" : "0",
                                   dataset: { relevance: String(w.relevance), index: String(i) },
                                   text: chars.slice(w.start, w.end).join("") });
    span.style.backgroundColor = css;
    if (alpha > 0.6) span.classList.add("strong");
    pieces.push(span);
    cursor = w.end;
  });
  pieces.push(chars.slice(cursor).join(""));
  const container = $(".doc", pane);
  container.replaceChildren(...pieces);
  container.dataset.target = doc.target;
}

// How a transformer read the document, and the relevance of its tokens in no word (as the HTML report says it).
function readIn(doc) {
  if (doc.windows === undefined) return "";
  const apart = Object.entries(doc.special).map(([name, r]) => `${name} ${format(r)}`).join(", ");
  return ` · read in ${doc.windows} window${doc.windows === 1 ? "" : "s"}` +
    (apart ? `; tokens in no word: ${apart}` : "");
}

function inspect(pane, span) {
  const target = $(".doc", pane).dataset.target;
  const r = Number(span.dataset.relevance);
  const side = r > 0 ? `for ${target}` : r < 0 ? `against ${target}` : "no relevance";
  $(".inspect", pane).textContent = `“${span.textContent}”: relevance ${format(r)} (${side})`;
}

function drawImage(pane, result, imageBase64) {
  const size = result.relevance.length;
  const scale = Math.max(0, ...result.relevance.flat().map(Math.abs));
  $(".scale", pane).textContent = `colour scale: ±${format(scale).replace("+", "")}`;
  const canvas = element("canvas", { width: String(size), height: String(size), role: "img",
                                     "aria-label": `relevance heatmap for ${result.target}` });
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(size, size);
  result.relevance.flat().forEach((r, k) => {
    const { alpha, rgb } = colour(r, scale);
    rgb.forEach((c, channel) => { pixels.data[4 * k + channel] = Math.round(255 + (c - 255) * alpha); });
    pixels.data[4 * k + 3] = 255;
  });
  context.putImageData(pixels, 0, 0);
  const original = element("img", { src: state.imageUrl, alt: "the explained image" });
  $(".image", pane).replaceChildren(
    element("figure", {}, [original, element("figcaption", { text: "input" })]),
    element("figure", {}, [canvas, element("figcaption", { text: "relevance" })]));
  $(".doc", pane).replaceChildren();
}

function drawLayers(totals) {
  const section = $("#layers");
  if (!totals) {
    $("tbody", section).replaceChildren(element("tr", {}, [element("td", {
      colspan: "3", className: "hint", text: "Explain a document to see the relevance at each layer." })]));
    return;
  }
  const largest = Math.max(0, ...totals.map((t) => Math.abs(t.relevance)));
  $("tbody", section).replaceChildren(...totals.map((t) => {
    const bar = element("span", { className: "layer-bar" });
    bar.style.width = `${largest > 0 ? (10 * Math.abs(t.relevance) / largest).toFixed(2) : 0}rem`;
    bar.style.backgroundColor = colour(t.relevance, largest).css.replace(/[\d.]+\)$/, "0.85)");
    return element("tr", {}, [element("td", { text: t.layer }), element("td", { className: "num",
                                                                            text: format(t.relevance) }),
                              element("td", {}, [bar])]);
  }));
}

// -- the corpus ---------------------------------------------------------------------------------------------------
async function summariseCorpus() {
  const file = $("#corpus-file").files[0];
  const status = $("#corpus-status");
  if (!file) { setStatus(status, "Choose a .jsonl or .csv file first.", true); return; }
  if (file.size > settings.limits.max_body_bytes) {
    setStatus(status, `${file.name} has ${file.size.toLocaleString()} bytes; this server takes up to ` +
              `${settings.limits.max_body_bytes.toLocaleString()}.`, true);
    return;
  }
  const format = /\.csv$/i.test(file.name) ? "csv" : "jsonl";
  setStatus(status, `Explaining ${file.name}…`);
  try {
    const answer = await api("/v1/corpus", {
      data: await file.text(), format, text_field: $("#text-field").value || "text",
      label_field: $("#label-field").value || null, model: state.model.kind === "text" ? state.model.name : null,
      composite: state.model.kind === "text" ? $("#composite").value : null,
    });
    drawCorpus(answer);
    const skipped = answer.rejected.length ? `; ${answer.rejected.length} records skipped (first: line ` +
      `${answer.rejected[0].line}, ${answer.rejected[0].reason})` : "";
    setStatus(status, `${answer.documents.length} documents explained by ${answer.model} (${answer.composite}), ` +
              `counted by ${answer.by}${skipped}.`);
  } catch (error) {
    setStatus(status, error.message, true);
  }
}

function drawCorpus(answer) {
  $("#corpus-documents").replaceChildren();
  $("#corpus-results").replaceChildren(...answer.classes.map((group) => element("div", {}, [
    element("h3", { text: `${group.label} (${group.documents} documents)` }),
    element("ol", {}, group.words.map((w) => {
      const button = element("button", { type: "button", className: "link",
                                         text: `${w.word} ${format(w.relevance)} (${w.occurrences}×)` });
      button.addEventListener("click", () => showDocuments(answer, group.label, w));
      return element("li", {}, [button]);
    })),
  ])));
}

function showDocuments(answer, label, word) {
  const list = element("ul", {}, word.documents.map((index) => {
    const doc = answer.documents[index];
    const snippet = Array.from(doc.text.replace(/\s+/g, " ")).slice(0, 140).join("");
    const button = element("button", { type: "button", className: "link", text: `line ${doc.line}: ${snippet}` });
    button.addEventListener("click", () => {
      if (state.model.name !== answer.model) { $("#model").value = answer.model; chooseModel(answer.model); }
      $("#text").value = doc.text;
      if (doc.explained) $("#target").value = doc.explained;
      updateContrast();
      explain();
      $("#results").scrollIntoView({ behavior: "smooth" });
    });
    return element("li", {}, [button]);
  }));
  const heading = element("h3", { text: `Documents with “${word.word}”, counted under ${label}`, tabindex: "-1" });
  $("#corpus-documents").replaceChildren(heading, list);
  heading.focus();
}

// -- events -------------------------------------------------------------------------------------------------------
function moveFocus(event) {
  const span = event.target.closest(".w");
  if (!span) return;
  const words = Array.from(event.currentTarget.querySelectorAll(".w"));
  const at = words.indexOf(span);
  const next = { ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1, Home: 0,
                 End: words.length - 1 }[event.key];
  if (next === undefined || next < 0 || next >= words.length) return;
  event.preventDefault();
  span.tabIndex = -1;
  words[next].tabIndex = 0;
  words[next].focus();
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function start() {
  for (const pane of [$("#pane-a"), $("#pane-b")]) {
    const doc = $(".doc", pane);
    doc.addEventListener("keydown", moveFocus);
    for (const type of ["mouseover", "focusin"]) {
      doc.addEventListener(type, (event) => { const span = event.target.closest(".w"); if (span) inspect(pane, span); });
    }
  }
  $("#query").addEventListener("submit", (event) => { event.preventDefault(); explain(); });
  $("#text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); explain(); }
  });
  $("#text-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) { $("#text").value = await file.text(); explain(); }
  });
  $("#image-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = URL.createObjectURL(file);
    state.image = await readImage(file);
    explain();
  });
  $("#model").addEventListener("change", (event) => chooseModel(event.target.value));
  $("#composite").addEventListener("change", () => { updateCompare(); rerun(); });
  $("#target").addEventListener("change", () => { updateContrast(); rerun(); });
  for (const id of ["#contrast", "#compare"]) $(id).addEventListener("change", rerun);
  $("#corpus-form").addEventListener("submit", (event) => { event.preventDefault(); summariseCorpus(); });
  const limits = settings.limits;
  $("#corpus-help").append(` Up to ${limits.max_corpus_documents} documents and ` +
    `${(limits.max_body_bytes / 1048576).toFixed(1)} MiB; documents of up to ${limits.max_characters.toLocaleString()} ` +
    "characters.");
  try {
    state.models = (await api("/v1/models")).models;
    fillSelect($("#model"), state.models.map((m) => [m.name, `${m.name} (${m.kind}, ${m.architecture})`]));
    chooseModel(state.models[0].name);
    setStatus($("#status"), "Ready.");
  } catch (error) {
    setStatus($("#status"), `Could not list the models: ${error.message}`, true);
  }
}

function rerun() {
  if (state.lastInput !== null) explain();
}

start();
