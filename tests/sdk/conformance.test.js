// HubSpot's official Node SDK (@hubspot/api-client, pinned in package.json) against a running
// Switchboard. Started by tests/sdk.rs, which passes SWITCHBOARD_URL and SWITCHBOARD_TOKEN.
// Every call goes through the SDK's own methods; the assertions check the values that come back.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const hubspot = require('@hubspot/api-client');

const basePath = process.env.SWITCHBOARD_URL;
const accessToken = process.env.SWITCHBOARD_TOKEN;
assert.ok(basePath && accessToken, 'SWITCHBOARD_URL and SWITCHBOARD_TOKEN must be set');
const client = new hubspot.Client({ accessToken, basePath, numberOfApiCallRetries: 0 });
const run = Date.now().toString(36);

// The SDK throws an ApiException whose `code` is the HTTP status and whose `body` is the error.
async function rejects(promise, status, category) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, status, `expected HTTP ${status}, got ${e.code}: ${JSON.stringify(e.body)}`);
    const body = typeof e.body === 'string' ? JSON.parse(e.body) : e.body;
    if (category) assert.equal(body.category, category);
    assert.ok(body.correlationId, 'error bodies carry a correlationId');
    return body;
  }
  assert.fail(`expected HTTP ${status}, the call succeeded`);
}

test('contacts: basic API, derived phone properties, paging, idProperty, archive', async () => {
  const api = client.crm.contacts.basicApi;
  const created = await api.create({
    properties: { firstname: 'Ada', lastname: 'Lovelace', email: `ada-${run}@example.com`, phone: '06 12 34 56 78', country: 'France' },
    associations: [],
  });
  assert.match(created.id, /^\d+$/);
  assert.equal(created.properties.firstname, 'Ada');
  assert.ok(created.createdAt instanceof Date && created.updatedAt instanceof Date);
  assert.equal(created.archived, false);

  const read = await api.getById(created.id, ['phone', 'hs_calculated_phone_number', 'hs_calculated_phone_number_country_code', 'hs_searchable_calculated_phone_number']);
  assert.equal(read.properties.hs_calculated_phone_number, '+33612345678');
  assert.equal(read.properties.hs_calculated_phone_number_country_code, 'FR');
  assert.equal(read.properties.hs_searchable_calculated_phone_number, '612345678');

  const byEmail = await api.getById(`ada-${run}@example.com`, ['firstname'], undefined, undefined, false, 'email');
  assert.equal(byEmail.id, created.id);

  const updated = await api.update(created.id, { properties: { lastname: 'King' } });
  assert.equal(updated.properties.lastname, 'King');
  const history = await api.getById(created.id, undefined, ['lastname']);
  assert.deepEqual(history.propertiesWithHistory.lastname.map((h) => h.value), ['King', 'Lovelace']);

  const dup = await rejects(api.create({ properties: { email: `ada-${run}@example.com` }, associations: [] }), 409, 'CONFLICT');
  assert.equal(dup.message, `Contact already exists. Existing ID: ${created.id}`);

  for (let i = 0; i < 3; i++) {
    await api.create({ properties: { firstname: `Page${i}`, email: `page${i}-${run}@example.com` }, associations: [] });
  }
  const page = await api.getPage(2, undefined, ['firstname']);
  assert.equal(page.results.length, 2);
  assert.ok(page.paging.next.after);
  const next = await api.getPage(2, page.paging.next.after, ['firstname']);
  assert.notEqual(next.results[0].id, page.results[0].id);

  await api.archive(created.id);
  await rejects(api.getById(created.id), 404, 'OBJECT_NOT_FOUND');
  const archived = await api.getById(created.id, undefined, undefined, undefined, true);
  assert.equal(archived.archived, true);
});

test('contacts: batch create, read, update, upsert and archive', async () => {
  const api = client.crm.contacts.batchApi;
  const created = await api.create({
    inputs: [0, 1, 2].map((i) => ({ properties: { firstname: `Batch${i}`, email: `batch${i}-${run}@example.com` }, associations: [] })),
  });
  assert.equal(created.status, 'COMPLETE');
  assert.equal(created.results.length, 3);
  const ids = created.results.map((r) => r.id);

  const read = await api.read({ inputs: ids.map((id) => ({ id })), properties: ['firstname'], propertiesWithHistory: [] });
  assert.deepEqual(read.results.map((r) => r.properties.firstname).sort(), ['Batch0', 'Batch1', 'Batch2']);

  const updated = await api.update({ inputs: ids.map((id) => ({ id, properties: { lastname: 'Batched' } })) });
  assert.ok(updated.results.every((r) => r.properties.lastname === 'Batched'));

  const upserted = await api.upsert({
    inputs: [
      { id: `batch0-${run}@example.com`, idProperty: 'email', properties: { jobtitle: 'Engineer' } },
      { id: `new-${run}@example.com`, idProperty: 'email', properties: { firstname: 'Fresh' } },
    ],
  });
  const flags = Object.fromEntries(upserted.results.map((r) => [r.properties.email, r._new ?? r['new']]));
  assert.equal(flags[`batch0-${run}@example.com`], false);
  assert.equal(flags[`new-${run}@example.com`], true);

  const partial = await api.read({ inputs: [{ id: ids[0] }, { id: '999999999' }], properties: ['firstname'], propertiesWithHistory: [] });
  assert.equal(partial.results.length, 1);
  assert.equal(partial.numErrors, 1);

  await rejects(api.create({ inputs: Array.from({ length: 101 }, () => ({ properties: {}, associations: [] })) }), 400, 'VALIDATION_ERROR');

  await api.archive({ inputs: ids.map((id) => ({ id })) });
  await rejects(client.crm.contacts.basicApi.getById(ids[0]), 404);
});

test('contacts: search by phone in any format, filters, sorts, limits', async () => {
  const basic = client.crm.contacts.basicApi;
  const tag = `s${run}`;
  const fr = await basic.create({ properties: { firstname: 'Marie', lastname: tag, phone: '06 98 76 54 32', country: 'FR' }, associations: [] });
  const us = await basic.create({ properties: { firstname: 'Zed', lastname: tag, phone: '(415) 555-2671 x12', associatedcompanyid: '7' }, associations: [] });
  const search = client.crm.contacts.searchApi;

  for (const [propertyName, value] of [['phone', '+33698765432'], ['phone', '0033 6 98 76 54 32'], ['hs_searchable_calculated_phone_number', '698765432'], ['hs_calculated_phone_number', '+33698765432']]) {
    const r = await search.doSearch({ filterGroups: [{ filters: [{ propertyName, operator: 'EQ', value }] }], properties: ['firstname'], limit: 10, after: '0', sorts: [] });
    assert.deepEqual(r.results.map((x) => x.id), [fr.id], `${propertyName} EQ ${value}`);
    assert.equal(r.total, 1);
  }
  const both = await search.doSearch({
    filterGroups: [{ filters: [{ propertyName: 'lastname', operator: 'EQ', value: tag }] }],
    sorts: [{ propertyName: 'firstname', direction: 'DESCENDING' }],
    properties: ['firstname'], limit: 1, after: '0',
  });
  assert.equal(both.total, 2);
  assert.equal(both.results[0].properties.firstname, 'Zed');
  assert.equal(both.paging.next.after, '1');
  const orGroups = await search.doSearch({
    filterGroups: [
      { filters: [{ propertyName: 'firstname', operator: 'EQ', value: 'Marie' }, { propertyName: 'lastname', operator: 'EQ', value: tag }] },
      { filters: [{ propertyName: 'associatedcompanyid', operator: 'GT', value: '6' }, { propertyName: 'lastname', operator: 'EQ', value: tag }] },
    ],
    properties: ['firstname'], limit: 10, after: '0', sorts: ['firstname'],
  });
  assert.deepEqual(orGroups.results.map((r) => r.properties.firstname), ['Marie', 'Zed']);
  const q = await search.doSearch({ query: '4155552671', properties: ['firstname'], limit: 10, after: '0', sorts: [], filterGroups: [] });
  assert.deepEqual(q.results.map((r) => r.id), [us.id]);

  const tooMany = { filterGroups: Array.from({ length: 6 }, () => ({ filters: [{ propertyName: 'firstname', operator: 'HAS_PROPERTY' }] })), limit: 10, after: '0', sorts: [], properties: [] };
  const err = await rejects(search.doSearch(tooMany), 400, 'VALIDATION_ERROR');
  assert.match(err.message, /filterGroups has 6 groups; the limit is 5/);
  await rejects(search.doSearch({ filterGroups: [], limit: 201, after: '0', sorts: [], properties: [] }), 400, 'VALIDATION_ERROR');
  await rejects(search.doSearch({ filterGroups: [], limit: 100, after: '9950', sorts: [], properties: [] }), 400, 'VALIDATION_ERROR');
});

test('companies: basic, batch and search APIs', async () => {
  const created = await client.crm.companies.basicApi.create({ properties: { name: `Acme ${run}`, domain: `acme-${run}.example`, phone: '+44 20 7946 0000' }, associations: [] });
  const byDomain = await client.crm.companies.basicApi.getById(`acme-${run}.example`, ['name', 'hs_calculated_phone_number'], undefined, undefined, false, 'domain');
  assert.equal(byDomain.id, created.id);
  assert.equal(byDomain.properties.hs_calculated_phone_number, '+442079460000');
  const batch = await client.crm.companies.batchApi.create({ inputs: [{ properties: { name: `Beta ${run}` }, associations: [] }] });
  assert.equal(batch.results[0].properties.name, `Beta ${run}`);
  const found = await client.crm.companies.searchApi.doSearch({ filterGroups: [{ filters: [{ propertyName: 'phone', operator: 'EQ', value: '020 7946 0000' }] }], properties: ['name'], limit: 10, after: '0', sorts: [] });
  assert.ok(found.results.some((r) => r.id === created.id));
  const merged = await client.crm.companies.basicApi.merge({ primaryObjectId: created.id, objectIdToMerge: batch.results[0].id });
  assert.equal(merged.id, created.id);
});

test('calls: inbound-call logs a call the calls API reads, batches and searches', async () => {
  const contact = await client.crm.contacts.basicApi.create({ properties: { firstname: 'Caller', phone: '+1 201 555 0188' }, associations: [] });
  const res = await fetch(`${basePath}/crm/v3/extensions/calling/inbound-call`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      createEngagement: true, engagementProperties: { hs_call_title: 'From the SDK suite' }, externalCallId: `sdk-${run}`,
      finalCallStatus: 'COMPLETED', fromNumber: { e164Number: '+12015550188', phoneNumberType: 'MOBILE' },
      toNumber: { e164Number: '+14155550100', phoneNumberType: 'FIXED_LINE' }, potentialRecipientUserIds: [], durationSeconds: 30,
    }),
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.callerIdMatches[0].objectCoordinates.objectId, Number(contact.id));
  const callId = res.headers.get('x-switchboard-call-id');

  const call = await client.crm.objects.calls.basicApi.getById(callId, ['hs_call_title', 'hs_call_duration', 'hs_call_direction'], undefined, ['contacts']);
  assert.equal(call.properties.hs_call_title, 'From the SDK suite');
  assert.equal(call.properties.hs_call_duration, '30000');
  assert.equal(call.associations.contacts.results[0].id, contact.id);

  const made = await client.crm.objects.calls.basicApi.create({ properties: { hs_timestamp: '2026-11-25T10:00:00Z', hs_call_title: 'Logged by hand', hs_call_direction: 'OUTBOUND' }, associations: [{ to: { id: contact.id }, types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 194 }] }] });
  assert.equal(made.properties.hs_timestamp, '2026-11-25T10:00:00.000Z');
  const batch = await client.crm.objects.calls.batchApi.read({ inputs: [{ id: callId }, { id: made.id }], properties: ['hs_call_title'], propertiesWithHistory: [] });
  assert.equal(batch.results.length, 2);
  const inbound = await client.crm.objects.calls.searchApi.doSearch({ filterGroups: [{ filters: [{ propertyName: 'hs_call_external_id', operator: 'EQ', value: `sdk-${run}` }] }], properties: ['hs_call_direction'], limit: 10, after: '0', sorts: [] });
  assert.deepEqual(inbound.results.map((r) => [r.id, r.properties.hs_call_direction]), [[callId, 'INBOUND']]);
});

test('properties: built-ins, custom properties, typed values', async () => {
  const all = await client.crm.properties.coreApi.getAll('contacts');
  const phone = all.results.find((p) => p.name === 'hs_calculated_phone_number');
  assert.equal(phone.modificationMetadata.readOnlyValue, true);
  const name = `tier_${run}`;
  const created = await client.crm.properties.coreApi.create('contacts', {
    name, label: 'Tier', type: 'enumeration', fieldType: 'select', groupName: 'contactinformation',
    options: [{ label: 'Gold', value: 'gold', displayOrder: 0, hidden: false }, { label: 'Silver', value: 'silver', displayOrder: 1, hidden: false }],
  });
  assert.equal(created.name, name);
  const got = await client.crm.properties.coreApi.getByName('contacts', name);
  assert.deepEqual(got.options.map((o) => o.value), ['gold', 'silver']);
  const c = await client.crm.contacts.basicApi.create({ properties: { firstname: 'Tiered', [name]: 'gold' }, associations: [] });
  const found = await client.crm.contacts.searchApi.doSearch({ filterGroups: [{ filters: [{ propertyName: name, operator: 'EQ', value: 'gold' }] }], properties: [name], limit: 10, after: '0', sorts: [] });
  assert.deepEqual(found.results.map((r) => r.id), [c.id]);
  const bad = await rejects(client.crm.contacts.basicApi.create({ properties: { [name]: 'bronze' }, associations: [] }), 400, 'VALIDATION_ERROR');
  assert.match(bad.message, /bronze/);
  const unknown = await rejects(client.crm.contacts.basicApi.create({ properties: { no_such_prop: 'x' }, associations: [] }), 400, 'VALIDATION_ERROR');
  assert.match(unknown.message, /no_such_prop/);
  await rejects(client.crm.properties.coreApi.create('contacts', { name, label: 'Again', type: 'string', fieldType: 'text', groupName: 'contactinformation' }), 409);
});

test('associations v4: create, read from both sides, default, batch, archive', async () => {
  const contact = await client.crm.contacts.basicApi.create({ properties: { firstname: 'Assoc' }, associations: [] });
  const company = await client.crm.companies.basicApi.create({ properties: { name: `Assoc ${run}` }, associations: [] });
  const v4 = client.crm.associations.v4;
  const made = await v4.basicApi.create('contacts', contact.id, 'companies', company.id, [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 1 }]);
  assert.equal(String(made.toObjectId), company.id);
  const fromContact = await v4.basicApi.getPage('contacts', contact.id, 'companies');
  assert.equal(String(fromContact.results[0].toObjectId), company.id);
  assert.equal(fromContact.results[0].associationTypes[0].typeId, 1);
  const fromCompany = await v4.basicApi.getPage('companies', company.id, 'contacts');
  assert.equal(String(fromCompany.results[0].toObjectId), contact.id);
  assert.equal(fromCompany.results[0].associationTypes[0].typeId, 2);

  const other = await client.crm.contacts.basicApi.create({ properties: { firstname: 'Default' }, associations: [] });
  const def = await v4.basicApi.createDefault('contacts', other.id, 'companies', company.id);
  assert.equal(def.results[0].associationSpec.associationTypeId, 279);

  const third = await client.crm.contacts.basicApi.create({ properties: { firstname: 'Batch' }, associations: [] });
  await v4.batchApi.create('contacts', 'companies', { inputs: [{ _from: { id: third.id }, to: { id: company.id }, types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 279 }] }] });
  const read = await v4.batchApi.getPage('companies', 'contacts', { inputs: [{ id: company.id }] });
  assert.deepEqual(read.results[0].to.map((t) => String(t.toObjectId)).sort(), [contact.id, other.id, third.id].sort());
  await v4.batchApi.archive('contacts', 'companies', { inputs: [{ _from: { id: third.id }, to: [{ id: company.id }] }] });
  await v4.basicApi.archive('contacts', other.id, 'companies', company.id);
  const after = await v4.basicApi.getPage('companies', company.id, 'contacts');
  assert.deepEqual(after.results.map((t) => String(t.toObjectId)), [contact.id]);
});

test('owners: list with email, get by id and by userId', async () => {
  const res = await fetch(`${basePath}/settings/v3/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ email: `owner-${run}@example.com`, firstName: 'Olive' }),
  });
  assert.equal(res.status, 201);
  const user = await res.json();
  const page = await client.crm.owners.ownersApi.getPage(`owner-${run}@example.com`);
  assert.equal(page.results.length, 1);
  const owner = page.results[0];
  assert.equal(owner.userId, Number(user.id));
  assert.notEqual(owner.id, user.id);
  assert.equal(owner.firstName, 'Olive');
  const byId = await client.crm.owners.ownersApi.getById(Number(owner.id));
  assert.equal(byId.email, `owner-${run}@example.com`);
  const byUser = await client.crm.owners.ownersApi.getById(Number(user.id), 'userId');
  assert.equal(byUser.id, owner.id);
});
