// A media preview inside a node: one element for the current result (a video, an image, or a
// scrubbable strip of frames) that fits the node's width, an optional bar under it, and a caption.
// Used by text2video.js; it only exports, so loading it as an extension does nothing.
import { api } from "../../scripts/api.js";

const MARGIN = 10; // the editor's default DOM widget margin
const CAPTION_HEIGHT = 18;
const BAR_HEIGHT = 26;
const MIN_MEDIA_WIDTH = 32;

const STYLE = `
.t2v-preview { display: flex; flex-direction: column; gap: 2px; overflow: hidden; box-sizing: border-box; }
.t2v-preview .t2v-stage { flex: 1 1 auto; min-height: 0; display: flex; justify-content: center; }
.t2v-preview .t2v-stage > video, .t2v-preview .t2v-stage > img {
  width: 100%; height: 100%; object-fit: contain; display: block; }
.t2v-preview .t2v-bar { flex: 0 0 ${BAR_HEIGHT - 2}px; height: ${BAR_HEIGHT - 2}px; overflow: hidden;
  display: flex; align-items: center; gap: 6px; font: 11px sans-serif; color: var(--descrip-text, #999); }
.t2v-preview .t2v-bar[hidden] { display: none; }
.t2v-preview .t2v-bar input[type=range] { flex: 1 1 auto; margin: 0; }
.t2v-preview .t2v-bar canvas { width: 100%; height: ${BAR_HEIGHT - 8}px; display: block; }
.t2v-preview .t2v-caption { flex: 0 0 ${CAPTION_HEIGHT - 2}px; font: 11px sans-serif; line-height: ${CAPTION_HEIGHT - 2}px;
  color: var(--descrip-text, #999); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; text-align: center; }
`;

function addStyle() {
  if (document.getElementById("t2v-preview-style")) return;
  const style = document.createElement("style");
  style.id = "t2v-preview-style";
  style.textContent = STYLE;
  document.head.append(style);
}

export function element(tag, className, properties = {}) {
  const made = Object.assign(document.createElement(tag), properties);
  if (className) made.className = className;
  return made;
}

/** The `/view` URL of a file the server knows: `{filename, subfolder, type}`. */
export function viewUrl({ filename, subfolder = "", type = "output" }, fresh = false) {
  const query = new URLSearchParams({ filename, subfolder, type });
  if (fresh) query.set("t", String(Date.now())); // an input file re-uploaded under the same name
  return api.apiURL(`/view?${query}`);
}

/** Media shown with an element that plays by itself; anything else is a still or a frame strip. */
export const VIDEO = "video";
export const IMAGE = "image";
export const FRAMES = "frames";

export class MediaPreview {
  constructor(node, name) {
    addStyle();
    this.node = node;
    this.aspect = 0; // height / width of the shown media; 0 = nothing shown yet
    this.barShown = false;
    this.root = element("div", "t2v-preview");
    this.stage = element("div", "t2v-stage");
    this.bar = element("div", "t2v-bar", { hidden: true });
    this.caption = element("div", "t2v-caption");
    this.root.append(this.stage, this.bar, this.caption);
    this.widget = node.addDOMWidget(name, "t2v-preview", this.root, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => this.height(),
      getMaxHeight: () => this.height(),
    });
    this.widget.serialize = false; // never among the node's saved widget values
    this.fitting = false;
    if (!node.t2vPreviews) {
      node.t2vPreviews = [];
      const onResize = node.onResize;
      node.onResize = function () {
        const result = onResize?.apply(this, arguments);
        this.t2vPreviews.forEach((preview) => preview.fit()); // a wider node shows a taller preview
        return result;
      };
    }
    node.t2vPreviews.push(this);
  }

  /** The widget's height: the media at the node's width, plus the bar and the caption. */
  height() {
    const width = Math.max(this.node.size[0] - 2 * MARGIN, MIN_MEDIA_WIDTH);
    const media = this.aspect ? Math.round(width * this.aspect) : 0;
    const captioned = this.caption.textContent ? CAPTION_HEIGHT : 0;
    return media + (this.barShown ? BAR_HEIGHT : 0) + captioned + (media || captioned ? 2 * MARGIN : 0);
  }

  /** Make the node exactly as tall as its widgets need (the preview follows the node's width). */
  fit() {
    if (this.fitting) return;
    this.fitting = true;
    try {
      const [width] = this.node.size;
      const needed = this.node.computeSize([width, this.node.size[1]])[1];
      if (Math.abs(needed - this.node.size[1]) > 1) this.node.setSize([width, needed]);
      this.node.setDirtyCanvas?.(true, true);
    } finally {
      this.fitting = false;
    }
  }

  /** Show `urls` as `kind` (VIDEO, IMAGE or FRAMES) with `caption`; replaces whatever was shown. */
  show(kind, urls, caption, { onVideo } = {}) {
    this.clearStage();
    this.caption.textContent = caption;
    this.caption.title = caption;
    const loaded = (width, height) => {
      this.aspect = width && height ? height / width : 0;
      this.fit();
    };
    const failed = () => {
      this.aspect = 0;
      this.caption.textContent = `${caption} (the browser cannot show this file)`;
      this.fit();
    };
    let media;
    if (kind === VIDEO) {
      media = element("video", "", { controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
      media.addEventListener("loadedmetadata", () => loaded(media.videoWidth, media.videoHeight));
      media.addEventListener("error", failed);
      onVideo?.(media);
    } else {
      media = element("img", "", { alt: caption, draggable: false });
      media.addEventListener("load", () => {
        if (!this.aspect) loaded(media.naturalWidth, media.naturalHeight);
      });
      media.addEventListener("error", failed);
      if (kind === FRAMES && urls.length > 1) this.showScrubber(media, urls);
    }
    media.dataset.kind = kind;
    media.src = urls[0];
    this.stage.append(media);
    this.fit();
    return media;
  }

  /** A range slider under a frame sequence: dragging it (or the wheel over it) shows each frame. */
  showScrubber(image, urls) {
    const slider = element("input", "", { type: "range", min: 0, max: urls.length - 1, value: 0, step: 1 });
    const label = element("span", "t2v-frame-label", { textContent: `1/${urls.length}` });
    const showFrame = (index) => {
      slider.value = String(index);
      label.textContent = `${index + 1}/${urls.length}`;
      image.src = urls[index];
    };
    slider.addEventListener("input", () => showFrame(Number(slider.value)));
    slider.addEventListener("wheel", (event) => {
      event.preventDefault();
      const step = Math.sign(event.deltaY);
      showFrame(Math.min(urls.length - 1, Math.max(0, Number(slider.value) + step)));
    });
    urls.slice(1).forEach((url) => { new Image().src = url; }); // warm the cache for smooth scrubbing
    this.showBar(slider, label);
  }

  /** Put `children` in the bar under the media (hidden when there are none). */
  showBar(...children) {
    this.bar.replaceChildren(...children);
    this.barShown = children.length > 0;
    this.bar.hidden = !this.barShown;
  }

  clearStage() {
    for (const old of this.stage.querySelectorAll("video")) {
      old.pause();
      old.removeAttribute("src");
      old.load(); // releases the decoder
    }
    this.stage.replaceChildren();
    this.showBar();
    this.aspect = 0;
  }

  /** Show only a message (no media). */
  message(text) {
    this.clearStage();
    this.caption.textContent = text;
    this.caption.title = text;
    this.fit();
  }
}
