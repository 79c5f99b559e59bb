/** Debian's Chromium, or $CHROME_PATH. */
export declare const chromiumPath: string;
/** Flags for headless test runs on a closed network, as root. */
export declare const chromiumArgs: readonly string[];
