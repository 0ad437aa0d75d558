/** Data hooks over the REST client: a live list (list + watch) and a one-shot GET. */
import { useCallback, useEffect, useState } from 'react';
import { api, startInformer } from './api/client';
import type { K8sObject } from './api/types';

export function useLiveList<T extends K8sObject>(listUrl: string | null): { items: T[]; error: Error | null; loaded: boolean } {
  const [state, setState] = useState<{ items: T[]; error: Error | null; loaded: boolean }>({ items: [], error: null, loaded: false });
  useEffect(() => {
    setState({ items: [], error: null, loaded: false });
    if (!listUrl) return;
    const h = startInformer<T>(
      listUrl,
      (items) => setState((s) => ({ ...s, items, loaded: true })),
      (error) => setState((s) => ({ ...s, error })),
    );
    return () => h.stop();
  }, [listUrl]);
  return state;
}

export function useGet<T extends K8sObject>(path: string | null): { data: T | null; error: Error | null; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!path) return;
    let live = true;
    api.get<T>(path).then(
      (d) => live && (setData(d), setError(null)),
      (e: Error) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [path, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, reload };
}
