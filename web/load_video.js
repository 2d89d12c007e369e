// T2VLoadVideo in the editor: an upload button (and file drop) for every format the node reads, and a
// preview of the selected clip with the frames that skip_first / select_every_nth / frame_limit keep.
// Used by text2video.js; it only exports, so loading it as an extension does nothing.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { FRAMES, IMAGE, MediaPreview, VIDEO, element, viewUrl } from "./preview.js";

export const UPLOAD_WIDGET_TYPE = "T2V_VIDEO_UPLOAD";
const EXTENSIONS = [".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp"];
const ACCEPT = ["video/*", "image/gif", "image/webp", ...EXTENSIONS].join(",");
const SELECTION_WIDGETS = ["skip_first", "select_every_nth", "frame_limit", "width", "height"];
const KEPT_COLOUR = "#4a9eff";
const SKIPPED_COLOUR = "rgba(128, 128, 128, 0.35)";

function acceptable(file) {
  const name = file.name.toLowerCase();
  return EXTENSIONS.some((extension) => name.endsWith(extension));
}

function notify(summary, detail) {
  const toast = app.extensionManager?.toast;
  if (toast) toast.add({ severity: "warn", summary, detail, life: 6000 });
  else console.warn(`[Text2Video] ${summary}: ${detail}`);
}

/** Upload `file` into the input folder (the editor's own /upload/image route) and select it. */
async function uploadInto(node, comboName, file) {
  if (!acceptable(file)) {
    notify("Not a video T2VLoadVideo reads", `${file.name}: use ${EXTENSIONS.join(", ")}`);
    return;
  }
  const body = new FormData();
  body.append("image", file);
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) {
    notify("Upload failed", `${file.name}: ${response.status} ${response.statusText}`);
    return;
  }
  const saved = await response.json();
  const path = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
  const combo = node.widgets.find((widget) => widget.name === comboName);
  const values = combo.options.values;
  if (Array.isArray(values) && !values.includes(path)) values.push(path);
  combo.value = path;
  combo.callback?.(path);
}

/**
 * The upload button (a custom widget type that replaces the editor's video-only one): the same
 * widget name and saved value ("image") as the editor's, so saved workflows look the same either way.
 */
export function uploadWidget(node, inputName, inputData) {
  const comboName = inputData?.[1]?.imageInputName ?? "video";
  const picker = element("input", "", { type: "file", accept: ACCEPT });
  picker.addEventListener("change", () => {
    const [file] = picker.files ?? [];
    picker.value = "";
    if (file) uploadInto(node, comboName, file);
  });
  const widget = node.addWidget("button", inputName, "image", () => picker.click(), { serialize: false });
  widget.label = "choose video to upload";
  node.onDragOver = (event) => [...(event.dataTransfer?.items ?? [])].some((item) => item.kind === "file");
  node.onDragDrop = (event) => {
    const [file] = event.dataTransfer?.files ?? [];
    if (!file) return false;
    uploadInto(node, comboName, file);
    return true;
  };
  return { widget };
}

/** The source frame indices kept, as the node selects them: skip, then every n-th, then the limit. */
export function keptFrames(total, skipFirst, everyNth, limit) {
  const kept = [];
  for (let index = skipFirst; index < total; index += Math.max(1, everyNth)) {
    kept.push(index);
    if (limit > 0 && kept.length === limit) break;
  }
  return kept;
}

function describeSelection(info, kept, values) {
  const parts = [];
  if (!kept.length) {
    parts.push(`skip_first ${values.skip_first} leaves none of ${info.frames} frames`);
  } else {
    const every = values.select_every_nth > 1 ? `, every ${values.select_every_nth}` : "";
    parts.push(`keeps ${kept.length} of ${info.frames} frames (${kept[0] + 1}-${kept[kept.length - 1] + 1}${every})`);
    parts.push(`${+(info.fps / Math.max(1, values.select_every_nth)).toFixed(2)} fps`);
  }
  const [width, height] = outputSize(info, values.width, values.height);
  parts.push(width === info.width && height === info.height ? `${width}x${height}` :
    `${info.width}x${info.height} -> ${width}x${height}`);
  return parts.join(" · ");
}

/** The loaded frames' size, as the node computes it: 0 keeps a side, one side alone keeps the aspect. */
function outputSize(info, width, height) {
  if (width && height) return [width, height];
  if (width) return [width, Math.max(1, Math.round(info.height * width / info.width))];
  if (height) return [Math.max(1, Math.round(info.width * height / info.height)), height];
  return [info.width, info.height];
}

function drawSelection(canvas, total, kept) {
  const width = canvas.clientWidth || 200;
  const height = canvas.clientHeight || 20;
  canvas.width = width * devicePixelRatio;
  canvas.height = height * devicePixelRatio;
  const context = canvas.getContext("2d");
  context.scale(devicePixelRatio, devicePixelRatio);
  const cell = width / Math.max(total, 1);
  context.fillStyle = SKIPPED_COLOUR;
  context.fillRect(0, 4, width, height - 8);
  context.fillStyle = KEPT_COLOUR;
  for (const index of kept) context.fillRect(index * cell, 2, Math.max(cell - (cell > 3 ? 1 : 0), 1), height - 4);
}

/** The preview on a T2VLoadVideo node; updates when the video or a selection widget changes. */
export class ClipPreview {
  constructor(node) {
    this.node = node;
    this.preview = new MediaPreview(node, "t2v_clip");
    this.request = 0;
    this.shown = null; // the video name whose media is on screen
    this.info = null;
    this.video = null;
    for (const name of ["video", ...SELECTION_WIDGETS]) {
      const widget = node.widgets?.find((candidate) => candidate.name === name);
      if (!widget) continue;
      const callback = widget.callback;
      widget.callback = (...args) => {
        const result = callback?.apply(widget, args);
        this.update();
        return result;
      };
    }
    const onConfigure = node.onConfigure;
    node.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      this.t2vClip?.update();
      return result;
    };
    node.t2vClip = this;
    requestAnimationFrame(() => this.update());
  }

  values() {
    const value = (name) => Number(this.node.widgets?.find((widget) => widget.name === name)?.value ?? 0);
    return Object.fromEntries(SELECTION_WIDGETS.map((name) => [name, value(name)]));
  }

  async update() {
    const name = this.node.widgets?.find((widget) => widget.name === "video")?.value;
    const request = ++this.request;
    if (!name) {
      this.shown = null;
      this.preview.message("no video in the input folder yet: upload one");
      return;
    }
    if (name !== this.shown) {
      const response = await api.fetchApi(`/t2v/video_info?${new URLSearchParams({ video: name })}`);
      const info = await response.json();
      if (request !== this.request) return; // a newer selection is on its way
      if (response.status !== 200) {
        this.shown = null;
        this.preview.message(info.error ?? `cannot read ${name}`);
        return;
      }
      this.info = info;
      this.shown = name;
      this.showMedia(info);
    }
    this.showSelection();
  }

  showMedia(info) {
    const source = { filename: info.preview.split("/").pop(), subfolder: info.preview.split("/").slice(0, -1).join("/"),
      type: "input" };
    const kind = info.kind === "video" ? VIDEO : info.kind === "folder" ? FRAMES : IMAGE;
    this.video = null;
    this.preview.show(kind, [viewUrl(source, true)], "", {
      onVideo: (video) => {
        this.video = video;
        video.addEventListener("timeupdate", () => this.keepToSelection());
      },
    });
    this.canvas = element("canvas", "t2v-selection");
    this.preview.showBar(this.canvas);
  }

  /** Loop the video over the kept frames only. */
  keepToSelection() {
    if (!this.video || !this.span) return;
    const [start, end] = this.span;
    if (this.video.currentTime < start || this.video.currentTime >= end) this.video.currentTime = start;
  }

  showSelection() {
    const { info } = this;
    if (!info) return;
    const values = this.values();
    const kept = keptFrames(info.frames, values.skip_first, values.select_every_nth, values.frame_limit);
    this.kept = kept;
    this.span = kept.length && info.fps ? [kept[0] / info.fps, (kept[kept.length - 1] + 1) / info.fps] : null;
    const caption = `${describeSelection(info, kept, values)} · ${this.shown}`;
    this.preview.caption.textContent = caption;
    this.preview.caption.title = caption;
    if (this.canvas) requestAnimationFrame(() => drawSelection(this.canvas, info.frames, kept));
    this.preview.fit();
  }
}
