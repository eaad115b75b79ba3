// Placeholder dashboard until the frontend bundle is built (see BUILD.md): lists runs and tags.
export async function render() {
  const body = document.body;
  const title = document.createElement("h3");
  title.textContent = "Attention";
  body.appendChild(title);
  const response = await fetch("./tags");
  const tags = await response.json();
  const list = document.createElement("ul");
  for (const [run, runTags] of Object.entries(tags)) {
    for (const [tag, info] of Object.entries(runTags)) {
      const item = document.createElement("li");
      item.textContent = `${run} / ${tag} (${info.kind}, ${info.steps.length} steps)`;
      list.appendChild(item);
    }
  }
  body.appendChild(list);
}
