/**
 * Small helpers over the `yaml` package's Document API. The Document is the source of truth while
 * editing: the form changes only the nodes it owns, so unknown keys and comments survive.
 */
import { Document, isCollection, isMap, isScalar, isSeq, parseDocument, stringify, YAMLMap, YAMLSeq } from 'yaml';

export type Path = readonly (string | number)[];

export function parseYaml(text: string): { doc: Document; error: string | null } {
  const doc = parseDocument(text, { keepSourceTokens: false });
  const error = doc.errors.length ? doc.errors.map((e) => e.message).join('\n') : null;
  return { doc, error };
}

export function objectToYaml(obj: unknown): string {
  return stringify(obj, { lineWidth: 0 });
}

/** The JS value at a path (plain data), or undefined. */
export function getJs(doc: Document, path: Path): unknown {
  const node = doc.getIn(path, true);
  if (node === undefined || node === null) return undefined;
  if (typeof node === 'object' && 'toJSON' in (node as object)) {
    return (node as { toJSON: () => unknown }).toJSON();
  }
  return node;
}

/** Sets a value at a path, creating maps on the way; objects are turned into YAML nodes. */
export function setJs(doc: Document, path: Path, value: unknown): void {
  ensureMapsTo(doc, path.slice(0, -1));
  blockIfEmptyFlow(doc, path.slice(0, -1));
  const existing = doc.getIn(path, true);
  if (isScalar(existing) && (value === null || typeof value !== 'object')) {
    // Keep the scalar node (and its comment); drop quoting that was only there for an empty string.
    if (existing.value === '') existing.type = undefined;
    existing.value = value;
    return;
  }
  doc.setIn(path, typeof value === 'object' && value !== null ? doc.createNode(value) : value);
}

/** An empty flow collection (`{}` / `[]`) that gets its first item becomes block style. */
export function blockIfEmptyFlow(doc: Document, path: Path): void {
  const node = doc.getIn(path, true);
  if (isCollection(node) && node.flow && node.items.length === 0) node.flow = false;
}

/** Makes sure each step of `path` is a map (replacing null / scalar placeholders). */
function ensureMapsTo(doc: Document, path: Path): void {
  for (let i = 1; i <= path.length; i++) {
    const sub = path.slice(0, i);
    const node = doc.getIn(sub, true);
    if (!isMap(node) && !isSeq(node)) doc.setIn(sub, new YAMLMap());
  }
}

export function deleteIn(doc: Document, path: Path): void {
  if (doc.hasIn(path)) doc.deleteIn(path);
}

/** Deletes a map at path if it has become empty (e.g. `bootloader: {}` after removing `efi`). */
export function pruneEmptyMap(doc: Document, path: Path): void {
  const node = doc.getIn(path, true);
  if (isMap(node) && node.items.length === 0) doc.deleteIn(path);
}

export function getSeq(doc: Document, path: Path): YAMLSeq | null {
  const node = doc.getIn(path, true);
  return isSeq(node) ? node : null;
}

/** The sequence at path, created (empty) when missing. */
export function ensureSeq(doc: Document, path: Path): YAMLSeq {
  const existing = getSeq(doc, path);
  if (existing) {
    blockIfEmptyFlow(doc, path);
    return existing;
  }
  ensureMapsTo(doc, path.slice(0, -1));
  const seq = new YAMLSeq();
  doc.setIn(path, seq);
  return seq;
}
