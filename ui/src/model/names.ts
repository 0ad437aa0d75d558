/** Kubernetes object-name validation (kept free of heavy imports: used by list pages). */

/** Valid Kubernetes object name (DNS-1123 label, as KubeVirt requires for VM names). */
export function nameError(name: string): string | null {
  if (!name) return 'Name is required';
  if (name.length > 63) return 'At most 63 characters';
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
    return 'Lowercase letters, digits and "-", starting and ending with a letter or digit';
  }
  return null;
}
