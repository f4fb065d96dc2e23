// "Paste a photo": a photo copied to the clipboard (a screenshot, an image copied from a web page) becomes the
// query. The paste is caught anywhere on the page while this box is shown; the image travels to Python as a data
// URL in the component's state value "photo", which Python decodes like an upload (core.images).
export default function (component) {
  const { data, setStateValue, parentElement } = component;
  const maxBytes = data.maxBytes;
  const box = document.createElement("div");
  box.className = "fvs-paste";
  box.tabIndex = 0;
  box.style.cssText = "border:2px dashed #c9c2c5;border-radius:8px;padding:18px;text-align:center;color:#555;" +
    "font-family:sans-serif;font-size:14px;cursor:text;outline:none;";
  box.textContent = data.prompt;
  parentElement.appendChild(box);

  function say(text, colour) {
    box.textContent = text;
    box.style.color = colour || "#555";
  }

  function onPaste(event) {
    const items = Array.from((event.clipboardData && event.clipboardData.items) || []);
    const item = items.find((entry) => entry.kind === "file" && entry.type.startsWith("image/"));
    if (!item) {
      say(data.notImage, "#b00020");
      return;
    }
    const file = item.getAsFile();
    event.preventDefault();
    if (file.size > maxBytes) {
      say(`${data.tooBig} (${(file.size / 1048576).toFixed(1)} MB)`, "#b00020");
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      setStateValue("photo", { name: file.name || "pasted image", data: reader.result });
      say(`${data.pasted}: ${file.name || "image"} (${Math.round(file.size / 1024)} KB)`);
    };
    reader.readAsDataURL(file);
  }

  document.addEventListener("paste", onPaste);
  return () => document.removeEventListener("paste", onPaste);
}
