// Calls the registry API through the gate the way a registry UI does, and records what the
// browser let the page see. Parameters come in the URL fragment (never sent to a server) as
// JSON: {target?, user, password, repo, digest}. Results go to window.results, then
// window.done = true. A step the browser blocked records {error: "TypeError: ..."}.
(async () => {
  const params = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const target = params.target || document.body.dataset.registryUrl;
  const auth = 'Basic ' + btoa(params.user + ':' + params.password);
  // Over 128 bytes, so Chromium preflights it even without other reasons (the Joxit UI's
  // manifest GET for tag details sends one like it).
  const longAccept = [
    'application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.index.v1+json',
    'application/vnd.oci.image.manifest.v1+json',
  ].join(', ');
  const manifestUrl = `${target}/v2/${params.repo}/manifests/${params.digest}`;
  const results = { target, origin: location.origin, acceptLength: longAccept.length };
  window.results = results;

  async function step(name, run) {
    results.running = name;
    try {
      results[name] = await run();
    } catch (e) {
      results[name] = { error: `${e.name}: ${e.message}` };
    }
  }

  await step('anonCatalog', async () => {
    const r = await fetch(`${target}/v2/_catalog`, { credentials: 'include' });
    return { status: r.status, wwwAuthenticate: r.headers.get('www-authenticate') };
  });
  await step('catalog', async () => {
    const r = await fetch(`${target}/v2/_catalog`, {
      credentials: 'include',
      headers: { Authorization: auth },
    });
    return { status: r.status, body: await r.json() };
  });
  await step('anonManifest', async () => {
    const r = await fetch(manifestUrl, { credentials: 'include', headers: { Accept: longAccept } });
    return { status: r.status };
  });
  await step('manifest', async () => {
    const r = await fetch(manifestUrl, {
      credentials: 'include',
      headers: { Accept: longAccept, Authorization: auth },
    });
    return { status: r.status, digest: r.headers.get('docker-content-digest') };
  });
  await step('upload', async () => {
    const r = await fetch(`${target}/v2/${params.repo}/blobs/uploads/`, {
      method: 'POST',
      credentials: 'include',
      headers: { Authorization: auth },
    });
    return {
      status: r.status,
      location: r.headers.get('location'),
      uuid: r.headers.get('docker-upload-uuid'),
    };
  });
  await step('delete', async () => {
    const r = await fetch(manifestUrl, {
      method: 'DELETE',
      credentials: 'include',
      headers: { Authorization: auth },
    });
    return { status: r.status };
  });

  delete results.running;
  document.getElementById('out').textContent = JSON.stringify(results, null, 2);
  window.done = true;
})();
