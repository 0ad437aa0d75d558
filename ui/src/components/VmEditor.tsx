/**
 * Form + YAML editor over one object. The YAML text is the source of truth: the form reads its
 * values from the parsed document and writes its changes back into that document in place, so
 * keys the form does not know (and comments) are kept. Save errors (Kubernetes Status causes)
 * appear at the matching form field; the rest in a banner.
 */
import { Alert, Button, Group, Stack, Tabs, Text } from '@mantine/core';
import { useMemo, useState, type ReactNode } from 'react';
import type { Document } from 'yaml';
import { ApiError } from '../api/client';
import type { K8sObject } from '../api/types';
import { diskNamesOf, splitCauses, type SplitCauses } from '../model/causes';
import { applyForm, nameError, readForm, type VmFormValues } from '../model/vmForm';
import { parseYaml, type Path } from '../model/yamlDoc';
import { VmForm } from './VmForm';
import { YamlEditor } from './YamlEditor';

export function VmEditor(props: {
  initialText: string;
  root: Path;
  identity: boolean;
  lockIdentity?: boolean;
  saveLabel: string;
  onSave: (obj: K8sObject) => Promise<unknown>;
  onCancel?: () => void;
  /** Extra fields above the form (e.g. a template version's description). */
  renderExtra?: (obj: K8sObject | null, edit: (fn: (doc: Document) => void) => void) => ReactNode;
  /** Extra buttons next to Save, given the current object. */
  renderActions?: (obj: K8sObject | null) => ReactNode;
}) {
  const [text, setText] = useState(props.initialText);
  const [tab, setTab] = useState<string | null>('form');
  const [saving, setSaving] = useState(false);
  const [result, setResult] = useState<SplitCauses | null>(null);

  const parsed = useMemo(() => {
    const { doc, error } = parseYaml(text);
    if (error) return { obj: null, values: null, error };
    const obj = doc.toJS() as unknown;
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return { obj: null, values: null, error: 'The YAML must be a mapping (an object).' };
    return { obj: obj as K8sObject, values: readForm(obj, props.root), error: null };
  }, [text, props.root]);

  const edit = (fn: (doc: Document) => void) => {
    const { doc, error } = parseYaml(text);
    if (error) return;
    fn(doc);
    setText(doc.toString());
  };
  const onFormChange = (next: VmFormValues) => {
    const prev = parsed.values;
    // A field the user has changed no longer shows the server's complaint about its old value.
    if (result && prev) {
      const valueOf = (v: VmFormValues, key: string) => {
        const [k, i] = key.split('.');
        return JSON.stringify(k === 'disks' ? v.disks[Number(i)] : v[k as keyof VmFormValues]);
      };
      const fields = Object.fromEntries(Object.entries(result.fields).filter(([k]) => valueOf(prev, k) === valueOf(next, k)));
      setResult({ ...result, fields });
    }
    edit((doc) => applyForm(doc, props.root, next, { identity: props.identity }));
  };

  const save = async () => {
    if (!parsed.obj) return;
    if (props.identity && !props.lockIdentity) {
      const ne = nameError(parsed.values?.name ?? '');
      if (ne) {
        setResult({ fields: { name: [ne] }, banner: [] });
        setTab('form');
        return;
      }
    }
    setSaving(true);
    setResult(null);
    try {
      await props.onSave(parsed.obj);
    } catch (e) {
      if (e instanceof ApiError) {
        const split = splitCauses(e.status, props.root, diskNamesOf(parsed.obj, props.root));
        setResult(split);
        if (Object.keys(split.fields).length) setTab('form');
      } else setResult({ fields: {}, banner: [String(e)] });
    } finally {
      setSaving(false);
    }
  };

  return (
    <Stack>
      {result && result.banner.length ? (
        <Alert color="red" title="Not saved" role="alert">
          {result.banner.map((m, i) => <Text size="sm" key={i}>{m}</Text>)}
        </Alert>
      ) : null}
      {result && !result.banner.length && Object.keys(result.fields).length ? (
        <Alert color="red" role="alert">Not saved: see the highlighted fields.</Alert>
      ) : null}
      {props.renderExtra?.(parsed.obj, edit)}
      <Tabs value={tab} onChange={setTab} keepMounted={false}>
        <Tabs.List>
          <Tabs.Tab value="form">Form</Tabs.Tab>
          <Tabs.Tab value="yaml">YAML</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="form" pt="md">
          {parsed.values ? (
            <VmForm values={parsed.values} onChange={onFormChange} errors={result?.fields ?? {}} identity={props.identity} lockIdentity={props.lockIdentity} />
          ) : (
            <Alert color="orange" title="The YAML does not parse">Fix it in the YAML tab to use the form.<br />{parsed.error}</Alert>
          )}
        </Tabs.Panel>
        <Tabs.Panel value="yaml" pt="md">
          {parsed.error ? <Alert color="orange" mb="xs">{parsed.error}</Alert> : null}
          <YamlEditor value={text} onChange={setText} />
        </Tabs.Panel>
      </Tabs>
      <Group>
        <Button onClick={save} loading={saving} disabled={!parsed.obj}>{props.saveLabel}</Button>
        {props.onCancel ? <Button variant="default" onClick={props.onCancel}>Cancel</Button> : null}
        {props.renderActions?.(parsed.obj)}
      </Group>
    </Stack>
  );
}
