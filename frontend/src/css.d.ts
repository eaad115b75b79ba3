// esbuild bundles .css imports as text (loader '.css': 'text' in build.mjs).
declare module '*.css' {
  const text: string;
  export default text;
}
