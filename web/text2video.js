// ComfyUI-Text2Video in the editor, on the frontend's public extension API:
// - T2VSaveVideo shows each result in the element its format needs (a video for mp4/webm, an image
//   for gif/webp, a scrubbable strip for png frames), sized to the node, with a caption;
// - T2VLoadVideo previews the selected clip and the frames its selection keeps, and its upload
//   button takes every format the node reads.
// The nodes work without this file: it only changes what the editor shows.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ClipPreview, UPLOAD_WIDGET_TYPE, uploadWidget } from "./load_video.js";
import { FRAMES, IMAGE, MediaPreview, VIDEO, viewUrl } from "./preview.js";

const SAVE_NODE = "T2VSaveVideo";
const LOAD_NODE = "T2VLoadVideo";
const KIND_OF_FORMAT = { mp4: VIDEO, webm: VIDEO, gif: IMAGE, webp: IMAGE, png: FRAMES };
const TEMPLATE_ORDER = ["text2video", "video2video_upscale", "text2video_zero", "text2video_zero_composed"];
/** The pack's folder under custom_nodes (its name is the user's choice): this file is served from it. */
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2)[0]);

/** The editor lists a pack's templates in the server's directory order: put the main demo first. */
function orderTemplates() {
  const listTemplates = api.getWorkflowTemplates.bind(api);
  api.getWorkflowTemplates = async (...args) => {
    const templates = await listTemplates(...args);
    const rank = (name) => (TEMPLATE_ORDER.includes(name) ? TEMPLATE_ORDER.indexOf(name) : TEMPLATE_ORDER.length);
    templates?.[PACK_FOLDER]?.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    return templates;
  };
}

function caption(info, files) {
  const first = files[0];
  const file = info.format === "png" ? `${first.subfolder}/` : first.filename;
  const parts = [];
  if (info.frames) parts.push(`${info.frames} frame${info.frames === 1 ? "" : "s"}`);
  if (info.width && info.height) parts.push(`${info.width}x${info.height}`);
  if (info.fps) parts.push(`${+Number(info.fps).toFixed(2)} fps`);
  parts.push(file);
  return parts.join(" · ");
}

/** Show a T2VSaveVideo result (`output` of the executed message) on its node. */
function showResult(node, output) {
  const files = output?.images ?? [];
  if (!files.length) return;
  const info = output.t2v_video?.[0] ?? {};
  const format = info.format ?? files[0].filename.split(".").pop().toLowerCase();
  node.t2vResult ??= new MediaPreview(node, "t2v_result");
  node.t2vResult.show(KIND_OF_FORMAT[format] ?? IMAGE, files.map((file) => viewUrl(file)), caption(info, files));
}

app.registerExtension({
  name: "Text2Video.Editor",

  init() {
    orderTemplates();
  },

  getCustomWidgets() {
    return { [UPLOAD_WIDGET_TYPE]: uploadWidget };
  },

  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === SAVE_NODE) {
      // The editor keeps a node's first preview element (a video stays a video) and would stack a
      // second one; this node's results change type with `format`, so it shows them itself.
      nodeType.prototype.onDrawBackground = function () {};
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const result = onExecuted?.apply(this, arguments);
        showResult(this, output);
        return result;
      };
    }
    if (nodeData.name === LOAD_NODE && nodeData.input?.required?.upload) {
      // The editor's button accepts only mp4/webm; this one takes gif, webp, mov and mkv too.
      nodeData.input.required.upload = [UPLOAD_WIDGET_TYPE, { imageInputName: "video" }];
    }
  },

  nodeCreated(node) {
    if (node.comfyClass === LOAD_NODE) new ClipPreview(node);
  },
});
