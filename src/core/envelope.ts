/**
 * Envelope addresses as the client sent them: the address between the angle brackets, untouched
 * (no punycode or case changes), and the ESMTP parameters as raw `KEY=value` words.
 */
export interface EnvelopeAddress {
  /** `''` for the null sender. */
  readonly address: string;
  /** Raw ESMTP parameters, e.g. `BODY=8BITMIME`, `NOTIFY=FAILURE`, `ORCPT=rfc822;a@b`. */
  readonly params: readonly string[];
}

/**
 * Which parameters an upstream may receive, by the EHLO keyword that announces them. A
 * parameter the upstream did not announce is dropped rather than sent (it would be a 555).
 */
const PARAM_EXTENSION: Record<string, string> = {
  SIZE: 'SIZE',
  BODY: '8BITMIME',
  SMTPUTF8: 'SMTPUTF8',
  RET: 'DSN',
  ENVID: 'DSN',
  NOTIFY: 'DSN',
  ORCPT: 'DSN',
  REQUIRETLS: 'REQUIRETLS',
};

export function paramsFor(params: readonly string[], extensions: ReadonlyMap<string, string>): string[] {
  return params.filter((param) => {
    const key = param.split('=', 1)[0]!.toUpperCase();
    const extension = PARAM_EXTENSION[key];
    return extension !== undefined && extensions.has(extension);
  });
}

export function mailCommand(sender: EnvelopeAddress, extensions: ReadonlyMap<string, string>): string {
  return ['MAIL FROM:<' + sender.address + '>', ...paramsFor(sender.params, extensions)].join(' ');
}

export function rcptCommand(recipient: EnvelopeAddress, extensions: ReadonlyMap<string, string>): string {
  return ['RCPT TO:<' + recipient.address + '>', ...paramsFor(recipient.params, extensions)].join(' ');
}
