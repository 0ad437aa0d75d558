import { Select, TextInput, Title } from '@mantine/core';
import { useEffect, useState } from 'react';
import { api } from '../api/client';
import { paths } from '../api/paths';
import { ErrorBanner, Loading } from '../components/Common';
import { VmEditor } from '../components/VmEditor';
import { newVersionObject, parseId } from '../model/template';
import { TEMPLATE_VERSION_ROOT } from '../model/vmForm';
import { objectToYaml, setJs } from '../model/yamlDoc';
import { useLiveList } from '../hooks';
import { navigate } from '../router';
import { forEditing } from './VmEdit';

/** A new version of a template, optionally starting from an existing version. Same VM form. */
export default function TemplateVersionEdit({ namespace, template }: { namespace: string; template: string }) {
  const versions = useLiveList(paths.templateVersions(namespace));
  const mine = versions.items.filter((v) => parseId(v.spec?.templateId, namespace)?.name === template);
  const [base, setBase] = useState<string | null>(null);
  const [initial, setInitial] = useState<string | null>(objectToYaml(newVersionObject({ namespace, name: template })));
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    if (!base) {
      setInitial(objectToYaml(newVersionObject({ namespace, name: template })));
      return;
    }
    setInitial(null);
    api.get(paths.templateVersion(namespace, base)).then((v) => {
      const copy = forEditing(v);
      copy.metadata = { generateName: `${template}-`, namespace };
      setInitial(objectToYaml(copy));
    }, setError);
  }, [base, namespace, template]);

  return (
    <>
      <Title order={2} mb="md">New version of template {namespace}/{template}</Title>
      <Select label="Start from" placeholder="An empty VM" clearable data={mine.map((v) => v.metadata?.name ?? '')} value={base} onChange={setBase} mb="md" />
      <ErrorBanner error={error} />
      {initial === null ? <Loading /> : (
        <VmEditor
          key={base ?? ''}
          initialText={initial}
          root={TEMPLATE_VERSION_ROOT}
          identity={false}
          saveLabel="Create version"
          onCancel={() => navigate('templates')}
          renderExtra={(obj, edit) => (
            <TextInput label="Version description" value={String(obj?.spec?.description ?? '')} onChange={(e) => { const val = e.currentTarget.value; edit((d) => setJs(d, ['spec', 'description'], val)); }} />
          )}
          onSave={async (obj) => {
            await api.create(paths.templateVersions(namespace), obj);
            navigate('templates');
          }}
        />
      )}
    </>
  );
}
