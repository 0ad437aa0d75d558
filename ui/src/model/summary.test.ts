import { describe, expect, it } from 'vitest';
import { firmwareLabel, formatAge, printableStatus, tpmMode } from './summary';

const vm = (domain: unknown, status?: unknown) => ({ spec: { template: { spec: { domain } } }, status });

describe('list summaries', () => {
  it('tpmMode', () => {
    expect(tpmMode(vm({}))).toBe('none');
    expect(tpmMode(vm({ devices: { tpm: {} } }))).toBe('ephemeral');
    expect(tpmMode(vm({ devices: { tpm: { persistent: true } } }))).toBe('persistent');
    expect(tpmMode(vm({ devices: { tpm: { enabled: false, persistent: true } } }))).toBe('none');
  });
  it('firmwareLabel', () => {
    expect(firmwareLabel(vm({}))).toBe('BIOS');
    expect(firmwareLabel(vm({ firmware: { bootloader: { bios: {} } } }))).toBe('BIOS');
    expect(firmwareLabel(vm({ firmware: { bootloader: { efi: {} } } }))).toBe('EFI+Secure Boot');
    expect(firmwareLabel(vm({ firmware: { bootloader: { efi: { secureBoot: false } } } }))).toBe('EFI');
    expect(firmwareLabel(vm({ firmware: { bootloader: { efi: { secureBoot: false, persistent: true } } } }))).toBe('EFI (persistent)');
    expect(firmwareLabel(vm({ firmware: { bootloader: { efi: { persistent: true } } } }))).toBe('EFI+Secure Boot (persistent)');
  });
  it('printableStatus', () => {
    expect(printableStatus(vm({}, { printableStatus: 'Stopped' }))).toBe('Stopped');
    expect(printableStatus(vm({}))).toBe('Unknown');
  });
  it('formatAge', () => {
    const now = Date.parse('2026-01-02T00:00:00Z');
    expect(formatAge('2026-01-01T23:59:30Z', now)).toBe('30s');
    expect(formatAge('2026-01-01T23:00:00Z', now)).toBe('60m');
    expect(formatAge('2026-01-01T00:00:00Z', now)).toBe('24h');
    expect(formatAge('2025-12-20T00:00:00Z', now)).toBe('13d');
    expect(formatAge(undefined, now)).toBe('-');
    expect(formatAge('garbage', now)).toBe('-');
  });
});
