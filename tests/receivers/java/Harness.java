// The harness of the Java example of docs/receivers.md (class WebhookVerifier, extracted from the
// page): one verdict per delivery on stdin (kind, key, webhook-id, webhook-timestamp,
// webhook-signature, base64 body; tab-separated).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;

public final class Harness {
    public static void main(String[] args) throws Exception {
        var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] f = line.split("\t", -1);
            Map<String, String> headers = Map.of(
                    "webhook-id", f[2], "webhook-timestamp", f[3], "webhook-signature", f[4]);
            byte[] body = Base64.getDecoder().decode(f[5]);
            boolean verdict = f[0].equals("ed25519")
                    ? WebhookVerifier.genuineEd25519(f[1], headers, body)
                    : WebhookVerifier.genuine(f[1], headers, body);
            System.out.println(verdict);
        }
    }
}
