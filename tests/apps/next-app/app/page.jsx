// A server component: importing tokenwarden on the server is safe (no
// browser global touched at import), and creating a client there rejects
// with code "unsupported_environment" instead of half-working.
import { createTokenClient } from "tokenwarden";
import { ClientApp } from "./ClientApp.jsx";

export const dynamic = "force-dynamic"; // render per request, in `next start`

async function serverCheck() {
  try {
    await createTokenClient({ refreshUrl: "/auth/refresh" });
    return "created (unexpected)";
  } catch (error) {
    return error?.code ?? `no code: ${error}`;
  }
}

export default async function Page() {
  const code = await serverCheck();
  return (
    <main>
      <h1>tokenwarden · Next.js App Router</h1>
      <p>
        server: typeof createTokenClient = <code id="server-typeof">{typeof createTokenClient}</code>; createTokenClient()
        rejected with <code id="server-code">{code}</code>
      </p>
      <ClientApp />
    </main>
  );
}
