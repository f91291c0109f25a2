<?xml version="1.0" encoding="UTF-8"?>
<!--
  cdisc_convert's own view of a Define-XML 2.1 document (the CDISC stylesheet cannot be shipped;
  pass it with - -stylesheet to use it instead). A table of datasets links to each dataset's
  variables; variables link to their value-level metadata, codelists, methods and comments.
-->
<xsl:stylesheet version="1.0"
  xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
  xmlns:odm="http://www.cdisc.org/ns/odm/v1.3"
  xmlns:def="http://www.cdisc.org/ns/def/v2.1"
  xmlns:xlink="http://www.w3.org/1999/xlink"
  exclude-result-prefixes="odm def xlink">
  <xsl:output method="html" encoding="UTF-8" indent="yes"/>
  <xsl:key name="item" match="odm:ItemDef" use="@OID"/>
  <xsl:key name="codelist" match="odm:CodeList" use="@OID"/>
  <xsl:key name="method" match="odm:MethodDef" use="@OID"/>
  <xsl:key name="comment" match="def:CommentDef" use="@OID"/>
  <xsl:key name="valuelist" match="def:ValueListDef" use="@OID"/>
  <xsl:key name="where" match="def:WhereClauseDef" use="@OID"/>
  <xsl:variable name="mdv" select="/odm:ODM/odm:Study/odm:MetaDataVersion"/>

  <xsl:template match="/">
    <html lang="en">
      <head>
        <meta charset="utf-8"/>
        <title><xsl:value-of select="$mdv/@Name"/></title>
        <style>
          body { font-family: sans-serif; margin: 1.5em; color: #222; }
          table { border-collapse: collapse; margin-bottom: 1.5em; width: 100%; }
          th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; font-size: 90%; }
          th { background: #e8eef6; }
          h2 { border-bottom: 2px solid #4a6fa5; padding-bottom: 2px; margin-top: 2em; }
          .small { color: #555; font-size: 85%; }
          a { color: #1b4f9c; }
        </style>
      </head>
      <body>
        <h1><xsl:value-of select="/odm:ODM/odm:Study/odm:GlobalVariables/odm:StudyName"/> &#8212;
          <xsl:value-of select="$mdv/@Name"/></h1>
        <p class="small"><xsl:value-of select="/odm:ODM/odm:Study/odm:GlobalVariables/odm:StudyDescription"/></p>
        <h2 id="standards">Standards</h2>
        <table>
          <tr><th>Name</th><th>Type</th><th>Version</th><th>Status</th></tr>
          <xsl:for-each select="$mdv/def:Standards/def:Standard">
            <tr><td><xsl:value-of select="@Name"/></td><td><xsl:value-of select="@Type"/></td>
              <td><xsl:value-of select="@Version"/></td><td><xsl:value-of select="@Status"/></td></tr>
          </xsl:for-each>
        </table>
        <xsl:if test="$mdv/def:leaf">
          <h2 id="documents">Documents</h2>
          <ul>
            <xsl:for-each select="$mdv/def:leaf">
              <li><a href="{@xlink:href}"><xsl:value-of select="def:title"/></a></li>
            </xsl:for-each>
          </ul>
        </xsl:if>
        <h2 id="datasets">Datasets</h2>
        <table id="dataset-table">
          <tr><th>Dataset</th><th>Description</th><th>Class</th><th>Structure</th><th>Purpose</th><th>Keys</th><th>Location</th></tr>
          <xsl:for-each select="$mdv/odm:ItemGroupDef">
            <tr>
              <td><a class="dataset-link" href="#{@OID}"><xsl:value-of select="@Name"/></a></td>
              <td><xsl:value-of select="odm:Description/odm:TranslatedText"/></td>
              <td><xsl:value-of select="def:Class/@Name"/>
                <xsl:for-each select="def:Class/def:SubClass"> / <xsl:value-of select="@Name"/></xsl:for-each></td>
              <td><xsl:value-of select="@def:Structure"/></td>
              <td><xsl:value-of select="@Purpose"/></td>
              <td>
                <xsl:for-each select="odm:ItemRef[@KeySequence]">
                  <xsl:sort select="@KeySequence" data-type="number"/>
                  <xsl:value-of select="key('item', @ItemOID)/@Name"/><xsl:if test="position() != last()">, </xsl:if>
                </xsl:for-each>
              </td>
              <td><a href="{def:leaf/@xlink:href}"><xsl:value-of select="def:leaf/def:title"/></a></td>
            </tr>
          </xsl:for-each>
        </table>
        <xsl:apply-templates select="$mdv/odm:ItemGroupDef"/>
        <xsl:if test="$mdv/def:ValueListDef">
          <h2 id="valuelists">Value-level metadata</h2>
          <xsl:apply-templates select="$mdv/def:ValueListDef"/>
        </xsl:if>
        <h2 id="codelists">Codelists</h2>
        <xsl:apply-templates select="$mdv/odm:CodeList"/>
        <h2 id="methods">Methods</h2>
        <table>
          <tr><th>Method</th><th>Type</th><th>Description</th></tr>
          <xsl:for-each select="$mdv/odm:MethodDef">
            <tr id="{@OID}"><td><xsl:value-of select="@Name"/></td><td><xsl:value-of select="@Type"/></td>
              <td><xsl:value-of select="odm:Description/odm:TranslatedText"/></td></tr>
          </xsl:for-each>
        </table>
        <xsl:if test="$mdv/def:CommentDef">
          <h2 id="comments">Comments</h2>
          <table>
            <tr><th>Comment</th><th>Text</th></tr>
            <xsl:for-each select="$mdv/def:CommentDef">
              <tr id="{@OID}"><td><xsl:value-of select="@OID"/></td><td><xsl:value-of select="odm:Description/odm:TranslatedText"/></td></tr>
            </xsl:for-each>
          </table>
        </xsl:if>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="odm:ItemGroupDef">
    <h2 id="{@OID}"><xsl:value-of select="@Name"/> (<xsl:value-of select="odm:Description/odm:TranslatedText"/>)</h2>
    <xsl:if test="@def:CommentOID">
      <p class="small"><a href="#{@def:CommentOID}">Comment</a>: <xsl:value-of select="key('comment', @def:CommentOID)/odm:Description/odm:TranslatedText"/></p>
    </xsl:if>
    <table class="variables">
      <tr><th>Variable</th><th>Label</th><th>Key</th><th>Type</th><th>Length</th><th>Format</th><th>Controlled Terms</th><th>Origin</th><th>Derivation / Comment</th></tr>
      <xsl:for-each select="odm:ItemRef">
        <xsl:variable name="it" select="key('item', @ItemOID)"/>
        <tr id="{@ItemOID}">
          <td>
            <xsl:choose>
              <xsl:when test="$it/def:ValueListRef"><a href="#{$it/def:ValueListRef/@ValueListOID}"><xsl:value-of select="$it/@Name"/></a></xsl:when>
              <xsl:otherwise><xsl:value-of select="$it/@Name"/></xsl:otherwise>
            </xsl:choose>
          </td>
          <td><xsl:value-of select="$it/odm:Description/odm:TranslatedText"/></td>
          <td><xsl:value-of select="@KeySequence"/></td>
          <td><xsl:value-of select="$it/@DataType"/></td>
          <td><xsl:value-of select="$it/@Length"/></td>
          <td><xsl:value-of select="$it/@def:DisplayFormat"/></td>
          <td><xsl:if test="$it/odm:CodeListRef"><a href="#{$it/odm:CodeListRef/@CodeListOID}"><xsl:value-of select="key('codelist', $it/odm:CodeListRef/@CodeListOID)/@Name"/></a></xsl:if></td>
          <td><xsl:value-of select="$it/def:Origin/@Type"/>
            <xsl:if test="$it/def:Origin/odm:Description"><br/><span class="small"><xsl:value-of select="$it/def:Origin/odm:Description/odm:TranslatedText"/></span></xsl:if>
            <xsl:apply-templates select="$it/def:Origin/def:DocumentRef[def:PDFPageRef]"/></td>
          <td>
            <xsl:if test="@MethodOID"><a href="#{@MethodOID}"><xsl:value-of select="key('method', @MethodOID)/odm:Description/odm:TranslatedText"/></a></xsl:if>
            <xsl:if test="$it/@def:CommentOID"><a href="#{$it/@def:CommentOID}"><xsl:value-of select="key('comment', $it/@def:CommentOID)/odm:Description/odm:TranslatedText"/></a></xsl:if>
          </td>
        </tr>
      </xsl:for-each>
    </table>
    <p class="small"><a href="#datasets">Back to datasets</a></p>
  </xsl:template>

  <xsl:template match="def:ValueListDef">
    <h3 id="{@OID}"><xsl:value-of select="@OID"/></h3>
    <table>
      <tr><th>Where</th><th>Label</th><th>Type</th><th>Length</th><th>Origin</th><th>Derivation</th></tr>
      <xsl:for-each select="odm:ItemRef">
        <xsl:variable name="it" select="key('item', @ItemOID)"/>
        <xsl:variable name="rc" select="key('where', def:WhereClauseRef/@WhereClauseOID)/odm:RangeCheck"/>
        <tr id="{@ItemOID}">
          <td><xsl:value-of select="key('item', $rc/@def:ItemOID)/@Name"/> = <xsl:value-of select="$rc/odm:CheckValue"/></td>
          <td><xsl:value-of select="$it/odm:Description/odm:TranslatedText"/></td>
          <td><xsl:value-of select="$it/@DataType"/></td>
          <td><xsl:value-of select="$it/@Length"/></td>
          <td><xsl:value-of select="$it/def:Origin/@Type"/>
            <xsl:if test="$it/def:Origin/odm:Description"><br/><span class="small"><xsl:value-of select="$it/def:Origin/odm:Description/odm:TranslatedText"/></span></xsl:if>
            <xsl:apply-templates select="$it/def:Origin/def:DocumentRef[def:PDFPageRef]"/></td>
          <td><xsl:if test="@MethodOID"><a href="#{@MethodOID}"><xsl:value-of select="key('method', @MethodOID)/odm:Description/odm:TranslatedText"/></a></xsl:if></td>
        </tr>
      </xsl:for-each>
    </table>
  </xsl:template>

  <!-- aCRF pages of a CRF origin: one link per page (PDF open parameters: #page=N) -->
  <xsl:template match="def:DocumentRef">
    <xsl:variable name="href" select="$mdv/def:leaf[@ID=current()/@leafID]/@xlink:href"/>
    <br/><span class="small">aCRF page<xsl:if test="contains(normalize-space(def:PDFPageRef/@PageRefs), ' ')">s</xsl:if>
      <xsl:call-template name="page-links">
        <xsl:with-param name="href" select="$href"/>
        <xsl:with-param name="pages" select="concat(normalize-space(def:PDFPageRef/@PageRefs), ' ')"/>
      </xsl:call-template></span>
  </xsl:template>

  <xsl:template name="page-links">
    <xsl:param name="href"/>
    <xsl:param name="pages"/>
    <xsl:if test="string-length($pages) &gt; 1">
      <xsl:variable name="page" select="substring-before($pages, ' ')"/>
      <xsl:text> </xsl:text><a class="acrf" href="{$href}#page={$page}"><xsl:value-of select="$page"/></a>
      <xsl:call-template name="page-links">
        <xsl:with-param name="href" select="$href"/>
        <xsl:with-param name="pages" select="substring-after($pages, ' ')"/>
      </xsl:call-template>
    </xsl:if>
  </xsl:template>

  <xsl:template match="odm:CodeList">
    <h3 id="{@OID}"><xsl:value-of select="@Name"/>
      <xsl:if test="odm:Alias[@Context='nci:ExtCodeID']"> [<xsl:value-of select="odm:Alias/@Name"/>]</xsl:if></h3>
    <table>
      <tr><th>Coded value</th><th>Decode</th><th>Extended</th></tr>
      <xsl:for-each select="odm:CodeListItem|odm:EnumeratedItem">
        <tr><td><xsl:value-of select="@CodedValue"/></td><td><xsl:value-of select="odm:Decode/odm:TranslatedText"/></td>
          <td><xsl:value-of select="@def:ExtendedValue"/></td></tr>
      </xsl:for-each>
    </table>
  </xsl:template>
</xsl:stylesheet>
